"""``alignrl debate judge|selfplay|table``.

    alignrl debate judge reward_models/debate_judge_quickstart.yaml [key=value ...] [--resume]
    alignrl debate selfplay recipes/debate/selfplay_quickstart.yaml --judge runs/debate_judge --out runs/selfplay \\
        [--generations 2] [--states 2000] [--length 4] [--seed 0] [--init tiny:test] [key=value ...]
    alignrl debate table --out runs/debate --seeds 0 1 2 --bc "runs/qs{seed}/bc" --data "runs/qs{seed}/data"
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path


def _judge(args: argparse.Namespace) -> int:
    from alignrl.debate.judge_train import load_judge_config, train_judge

    config = load_judge_config(args.recipe, args.overrides)
    command = "alignrl debate judge " + shlex.join([args.recipe, *args.overrides, *(["--resume"] * args.resume)])
    figures = train_judge(config, resume=args.resume, command=command)
    held = figures["heldout"]
    print(f"judge saved: {config.output_dir}; held-out accuracy: full evidence {held['full']['accuracy']:.1%}, "
          f"random L units {held['random_L']['accuracy']:.1%}, none {held['none']['accuracy']:.1%}",
          file=sys.stderr)
    return 0


def _selfplay(args: argparse.Namespace) -> int:
    from alignrl.debate.domain import DomainSpec, make_problems
    from alignrl.debate.judge import JudgeInfo
    from alignrl.debate.judge_train import TINY_PREFIX, build_tiny_init
    from alignrl.debate.selfplay import run_selfplay

    if not (Path(args.judge) / "config.json").is_file():
        raise FileNotFoundError(f"--judge {args.judge}: not a judge folder (no config.json)")
    out = Path(args.out)
    init = Path(args.init)
    if args.init.startswith(TINY_PREFIX):
        init = out / "init"
        if not (init / "config.json").is_file():
            init.mkdir(parents=True, exist_ok=True)
            build_tiny_init(args.init, init, args.seed, {"num_hidden_layers": 2})
    elif not (init / "config.json").is_file():
        raise FileNotFoundError(f"--init {args.init}: not a model folder (no config.json)")
    spec = JudgeInfo.read(args.judge).domain
    problems = make_problems(5000, args.seed, "train", DomainSpec(**spec) if spec else None)
    final = run_selfplay(args.recipe, out, init, problems, args.generations, args.states, args.length, args.seed,
                         args.overrides, judge=args.judge)
    print(f"debater after {args.generations} generations: {final}", file=sys.stderr)
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from alignrl.debate import experiments

    jobs = parser.add_subparsers(dest="debate_command", required=True)
    judge = jobs.add_parser("judge", help="train a debate judge (Bradley-Terry on random evidence subsets)")
    judge.add_argument("recipe", help="judge recipe YAML (see reward_models/debate_*.yaml)")
    judge.add_argument("overrides", nargs="*", help="section.key=value overrides, e.g. rm.max_steps=100")
    judge.add_argument("--resume", action="store_true", help="continue from the last checkpoint in output_dir")
    judge.set_defaults(debate_func=_judge)
    play = jobs.add_parser("selfplay", help="train an LM debater by self-play through the RL loop")
    play.add_argument("recipe", help="self-play recipe (recipes/debate/selfplay_quickstart.yaml)")
    play.add_argument("overrides", nargs="*", help="section.key=value overrides of the recipe")
    play.add_argument("--judge", required=True, help="judge folder (alignrl debate judge)")
    play.add_argument("--out", required=True, help="output folder: states/, gen<g>/ runs")
    play.add_argument("--init", default="tiny:test", help="starting debater folder, or tiny:<preset> (default)")
    play.add_argument("--generations", type=int, default=3, help="self-play generations (default 3)")
    play.add_argument("--states", type=int, default=4000, help="debate states per generation")
    play.add_argument("--length", type=int, default=4, help="L, units revealed per debate")
    play.add_argument("--seed", type=int, default=0, help="seed of the debate states and training (default 0)")
    play.set_defaults(debate_func=_selfplay)
    table = jobs.add_parser("table", help="the judge-accuracy and policy figures of docs/results.md")
    experiments.add_arguments(table)
    table.set_defaults(debate_func=experiments.run)


def run(args: argparse.Namespace) -> int:
    return int(args.debate_func(args))
