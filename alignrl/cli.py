"""The ``alignrl`` command: a thin layer that parses arguments and calls the library.

    alignrl train RECIPE.yaml [section.key=value ...] [--resume [auto]]
    alignrl sft RECIPE.yaml [section.key=value ...]
    alignrl quickstart --out DIR --seed S
    alignrl eval math500 --model PATH --out DIR [...]
    alignrl grade [FILE ...] [--output FILE]
    alignrl plot RUN_DIR
    alignrl rm train RECIPE.yaml [key=value ...] [--resume]
    alignrl rm data {synthetic,labelled} --out DIR [...]
    alignrl score --model RM_DIR --data FILE --out DIR [--group-by COL ...]
    alignrl bench --out DIR [--suite train,grader,rollout,sync] [--repeats N]
    alignrl serve --model DIR [--port 8000] [--enable-lora] [-- VLLM ARGS...]
    alignrl sweep RECIPE.yaml --grid algorithm.kl_coef=0,0.01,0.1 [--seeds 0 1 2] [--out DIR] [key=value ...]
    alignrl compare --base RECIPE.yaml [--methods recipes/compare/grpo.yaml ...] --bc "runs/x/seed{seed}/bc" \\
        --data "runs/x/seed{seed}/data" [--seeds 0 1 2] [--out DIR] [key=value ...]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors caused by bad input: printed as one clear line (exit 2) instead of a traceback."""
    from alignrl.config import ConfigError
    from alignrl.data import DataError
    from alignrl.learner.models import ModelLoadError
    from alignrl.rewards import RewardError
    from alignrl.run_dir import RunDirError

    return (ConfigError, DataError, ModelLoadError, RewardError, RunDirError, FileNotFoundError)


def _train(args: argparse.Namespace) -> int:
    """Exit status 0 (finished), 2 (bad input, or the disk filled while saving a checkpoint) or 75 (stopped by
    SIGTERM/SIGUSR1 after saving a checkpoint: requeue and rerun with ``--resume auto``; see alignrl.preemption)."""
    from alignrl.checkpoint import CheckpointError
    from alignrl.config import load_config
    from alignrl.loop import train
    from alignrl.preemption import PREEMPTED_EXIT, Preempted

    try:
        run_dir = train(load_config(args.recipe, args.overrides), resume=args.resume)
    except CheckpointError as err:
        print(f"alignrl train: error: {err}", file=sys.stderr)
        return 2
    except Preempted as stopped:
        print(f"alignrl train: preempted: {stopped} (exit status {PREEMPTED_EXIT})", file=sys.stderr)
        return PREEMPTED_EXIT
    print(f"run finished: {run_dir}", file=sys.stderr)
    return 0


def _sft(args: argparse.Namespace) -> int:
    from alignrl.sft_recipe import load_sft_config, run_sft_recipe

    out = run_sft_recipe(load_sft_config(args.recipe, args.overrides))
    print(f"model saved: {out}", file=sys.stderr)
    return 0


def _quickstart(args: argparse.Namespace) -> int:
    from alignrl.quickstart.run import run_quickstart

    report = run_quickstart(args.out, seed=args.seed, overwrite=args.overwrite)
    print(f"BC pass@1 {report['bc_pass_at_1']:.1%} -> RL pass@1 {report['rl_pass_at_1']:.1%} "
          f"in {report['wall_seconds']:.0f} s; report: {args.out}/report.md")
    return 0


def _plot(args: argparse.Namespace) -> int:
    from alignrl.logging.plot import plot_run

    print(plot_run(args.run_dir, args.output))
    return 0


def _sweep(args: argparse.Namespace) -> int:
    from alignrl.sweep import SweepError, run_sweep, split_seeds

    try:
        seeds, extra = split_seeds(args.seeds)
        run_sweep(args.recipe, args.grid, seeds, args.out, [*args.overrides, *extra], args.kl_metric, args.window)
    except SweepError as err:
        print(f"alignrl sweep: error: {err}", file=sys.stderr)
        return 2
    return 0


def _compare(args: argparse.Namespace) -> int:
    from alignrl.compare import run_from_args

    return run_from_args(args, args.command_argv)


LAZY_COMMANDS = {  # command -> (help, module with add_arguments/run); imported only when the command runs
    ("grade",): ("grade math answers: JSONL {output, gold} in, verdicts out", "alignrl.grading.cli"),
    ("eval", "math500"): ("MATH-500 pass@1, pass@k, maj@k", "alignrl.evaluation.cli"),
    ("rm",): ("reward models: `rm train RECIPE` (Bradley-Terry, TRL RewardTrainer), `rm data` (preference pairs)",
              "alignrl.reward_model.train_cli"),
    ("score",): ("score preference pairs or responses with a reward model: JSONL, summary, plots",
                 "alignrl.reward_model.score_cli"),
    ("serve",): ("vLLM server for the vllm engine's server mode", "alignrl.rollout.vllm_serve"),
    ("bench",): ("speed against the peers (TRL, math-verify, hf engine): bench.json, bench.md, PNGs",
                 "alignrl.bench.cli"),
    ("debate",): ("debate rewards: `debate judge RECIPE`, `debate selfplay RECIPE`, `debate table`",
                  "alignrl.debate.cli"),
}


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alignrl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="RL training from a recipe")
    train.add_argument("recipe", help="recipe YAML (see recipes/)")
    train.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. trainer.lr=1e-6")
    train.add_argument("--resume", nargs="?", const=True, default=False, choices=["auto"],
                       help="continue from the newest intact checkpoint in output_dir; '--resume auto': resume "
                            "if there is a complete checkpoint, start fresh otherwise (for requeued jobs)")
    train.set_defaults(func=_train)

    sft = sub.add_parser("sft", help="behaviour cloning / SFT on demonstrations (TRL SFTTrainer)")
    sft.add_argument("recipe", help="SFT recipe YAML (see recipes/sft_*.yaml)")
    sft.add_argument("overrides", nargs="*", help="key=value overrides, e.g. sft.max_steps=300 or "
                                                  "overwrite_output_dir=true")
    sft.set_defaults(func=_sft)

    quick = sub.add_parser("quickstart", help="offline end-to-end demo: BC then GRPO on a tiny model (CPU)")
    quick.add_argument("--out", default="runs/quickstart", help="output folder")
    quick.add_argument("--seed", type=int, default=0, help="seed of the task data, the model and training "
                                                            "(default 0)")
    quick.add_argument("--overwrite", action="store_true", help="replace a finished quickstart in --out")
    quick.set_defaults(func=_quickstart)

    plot = sub.add_parser("plot", help="PNG curves of a run's metrics.jsonl")
    plot.add_argument("run_dir", help="a run's output_dir (holding metrics.jsonl)")
    plot.add_argument("--output", default=None, help="PNG path (default RUN_DIR/curves.png)")
    plot.set_defaults(func=_plot)

    from alignrl.sweep import add_arguments as add_sweep_arguments

    sweep = sub.add_parser("sweep", help="one run per grid value (and seed), then the reward-KL frontier")
    add_sweep_arguments(sweep)
    sweep.set_defaults(func=_sweep)

    argv = sys.argv[1:] if argv is None else argv
    from alignrl.compare import add_arguments as add_compare_arguments

    compare = sub.add_parser("compare", help="RL methods from the same BC start per seed, at an equal rollout budget")
    add_compare_arguments(compare)
    compare.set_defaults(func=_compare, command_argv=list(argv))
    suites = sub.add_parser("eval", help="benchmarks").add_subparsers(dest="suite", required=True)
    for words, (help_text, module) in LAZY_COMMANDS.items():
        parent = sub if len(words) == 1 else suites
        child = parent.add_parser(words[-1], help=help_text)
        if list(argv[:len(words)]) == list(words):  # only the command being run imports its module
            import importlib

            mod = importlib.import_module(module)
            mod.add_arguments(child)
            child.set_defaults(func=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser(argv).parse_args(argv)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # keep stderr to our own progress bars
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return int(func(args) or 0)
    except _user_errors() as err:
        print(f"alignrl {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
