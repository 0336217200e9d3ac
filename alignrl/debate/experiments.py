"""The debate figures of ``docs/results.md``, per seed, every stage resumable (a finished stage is skipped):

1. the judge (``reward_models/debate_judge_quickstart.yaml``, data and init seeded by the seed);
2. an LM debater trained by self-play through the RL loop (``recipes/debate/selfplay_quickstart.yaml``), from a
   fresh tiny Llama;
3. judge accuracy on held-out problems per evidence-selection scheme, without and with a confuser;
4. GRPO from the quickstart's BC model with the justifiable reward at each λ (``recipes/debate/
   grpo_debate_quickstart.yaml``), then held-out task reward, justifiability and the cost per RL step.

    python -m alignrl.debate.experiments --out runs/debate --seeds 0 1 2 --bc "runs/qs{seed}/bc" \\
        --data "runs/qs{seed}/data"

(``alignrl quickstart --out runs/qs{seed} --seed {seed}`` makes the BC models.) ``results.json`` and ``table.md``
in ``--out`` hold the figures, mean ± std over the seeds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

LAMS = (0.0, 0.5, 1.0)


@dataclass
class Settings:
    out: str = "runs/debate"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    bc: str = "runs/qs{seed}/bc"
    data: str = "runs/qs{seed}/data"
    judge_recipe: str = "reward_models/debate_judge_quickstart.yaml"
    selfplay_recipe: str = "recipes/debate/selfplay_quickstart.yaml"
    policy_recipe: str = "recipes/debate/grpo_debate_quickstart.yaml"
    length: int = 4
    eval_problems: int = 300
    eval_prompts: int = 200
    generations: int = 3
    states: int = 4000
    lams: list[float] = field(default_factory=lambda: list(LAMS))
    judge_overrides: list[str] = field(default_factory=list)
    selfplay_overrides: list[str] = field(default_factory=list)
    policy_overrides: list[str] = field(default_factory=list)


def stage_judge(s: Settings, seed: int) -> Path:
    from alignrl.debate.judge_train import load_judge_config, train_judge

    out = Path(s.out) / f"seed{seed}" / "judge"
    if not (out / "eval.json").is_file():
        config = load_judge_config(s.judge_recipe, [*s.judge_overrides, f"data.seed={seed}", f"rm.seed={seed}",
                                                    f"judge.length={s.length}", f"output_dir={out}",
                                                    "overwrite_output_dir=true"])
        train_judge(config, command=f"alignrl debate judge {s.judge_recipe} data.seed={seed} rm.seed={seed}")
    return out


def stage_debater(s: Settings, seed: int, judge: Path) -> Path:
    from alignrl.debate.domain import make_problems
    from alignrl.debate.judge import JudgeInfo
    from alignrl.debate.judge_train import build_tiny_init
    from alignrl.debate.selfplay import run_selfplay

    out = Path(s.out) / f"seed{seed}" / "selfplay"
    init = out / "init"
    if not (init / "config.json").is_file():
        init.mkdir(parents=True, exist_ok=True)
        build_tiny_init("tiny:test", init, seed, {"num_hidden_layers": 2})
    spec = JudgeInfo.read(judge).domain or {}
    from alignrl.debate.domain import DomainSpec

    problems = make_problems(5000, seed, "train", DomainSpec(**spec) if spec else None)
    return run_selfplay(s.selfplay_recipe, out, init, problems, s.generations, s.states, s.length, seed,
                        s.selfplay_overrides, judge=str(judge))


def stage_table(s: Settings, seed: int, judge_dir: Path, debater: Path | None) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from alignrl.debate.debaters import LMDebater
    from alignrl.debate.domain import DomainSpec, make_problems
    from alignrl.debate.evaluate import judge_table
    from alignrl.debate.judge import Judge, JudgeInfo
    from alignrl.rollout import build_engine

    judge = Judge.load(judge_dir, device="cpu")
    spec = JudgeInfo.read(judge_dir).domain
    problems = make_problems(s.eval_problems, seed + 10_000, "heldout", DomainSpec(**spec) if spec else None)
    trained = None
    if debater is not None:
        tokenizer = AutoTokenizer.from_pretrained(str(debater))
        trained = LMDebater(build_engine("hf", None, model_path=str(debater), tokenizer=tokenizer), tokenizer,
                            temperature=0.0, name="self-play")
    return judge_table(judge, problems, s.length, seed, trained)


def stage_policy(s: Settings, seed: int, judge_dir: Path, lam: float) -> dict[str, Any]:
    from alignrl.config import load_config
    from alignrl.debate.evaluate import policy_figures, step_costs
    from alignrl.debate.judge import Judge
    from alignrl.loop import train

    bc, data = Path(s.bc.format(seed=seed)), Path(s.data.format(seed=seed))
    run_dir = Path(s.out) / f"seed{seed}" / f"policy_lam{lam:g}"
    recipe = _with_debate_kwargs(s.policy_recipe, run_dir.with_suffix(".yaml"),
                                 {"lam": lam, "judge": str(judge_dir), "baseline_model": str(bc), "length": s.length})
    config = load_config(recipe, [*s.policy_overrides, f"model.path={bc}", f"data.train={data / 'rl_prompts.jsonl'}",
                                  f"data.eval={data / 'heldout.jsonl'}", f"trainer.output_dir={run_dir}",
                                  f"trainer.seed={seed}", "eval.every_steps=0"])
    final = run_dir / f"checkpoint-{config.trainer.max_steps:06d}"
    if not (final / "config.json").is_file():
        train(config, resume="auto")
    rows = [json.loads(line) for line in (data / "heldout.jsonl").read_text().splitlines()][:s.eval_prompts]
    judge = Judge.load(judge_dir, device="cpu")
    return {**policy_figures(final, bc, rows, judge, s.length, seed), **step_costs(run_dir)}


def _with_debate_kwargs(recipe: str | Path, out: Path, kwargs: dict[str, Any]) -> Path:
    """A copy of ``recipe`` at ``out`` with ``kwargs`` set in its ``debate`` reward term (recipe overrides cannot
    reach into the list of reward terms); it stays next to the run as the record of what ran."""
    from alignrl.config.loader import read_yaml

    data = read_yaml(recipe)
    terms = [t for t in (data.get("reward") or {}).get("functions") or [] if t.get("name") == "debate"]
    if not terms:
        raise ValueError(f"{recipe}: the policy recipe has no 'debate' reward term")
    terms[0].setdefault("kwargs", {}).update(kwargs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False))
    return out


def measure_cost(s: Settings, seed: int, steps: int, repeats: int = 2) -> dict[str, dict[str, float]]:
    """Seconds per RL step at each λ, measured back to back (λ order repeated ``repeats`` times, so slow drifts
    in the machine's load hit every λ alike): short runs of ``steps`` steps from the seed's BC model with its
    judge. Returns, per λ, the mean step and scoring seconds and the step time as a ratio to λ = 0."""
    from alignrl.config import load_config
    from alignrl.debate.evaluate import step_costs
    from alignrl.loop import train

    bc, data = Path(s.bc.format(seed=seed)), Path(s.data.format(seed=seed))
    judge = Path(s.out) / f"seed{seed}" / "judge"
    folder = Path(s.out) / "cost"
    runs: dict[str, list[dict[str, float]]] = {}
    for r in range(repeats):
        for lam in s.lams:
            run_dir = folder / f"lam{lam:g}-rep{r}"
            metrics = run_dir / "metrics.jsonl"
            if not metrics.is_file() or len(metrics.read_text().splitlines()) < steps:
                recipe = _with_debate_kwargs(s.policy_recipe, run_dir.with_suffix(".yaml"), {
                    "lam": lam, "judge": str(judge), "baseline_model": str(bc), "length": s.length})
                train(load_config(recipe, [*s.policy_overrides, f"model.path={bc}", f"trainer.max_steps={steps}",
                                           f"data.train={data / 'rl_prompts.jsonl'}", "eval.every_steps=0",
                                           f"trainer.output_dir={run_dir}", "trainer.overwrite_output_dir=true",
                                           f"trainer.seed={seed}", "logging.progress_bar=false"]))
            runs.setdefault(f"{lam:g}", []).append(step_costs(run_dir))
    base = statistics.fmean(c["step_seconds"] for c in runs.get("0", [{"step_seconds": float("nan")}]))
    return {lam: {"step_seconds": statistics.fmean(c["step_seconds"] for c in got),
                  "score_seconds": statistics.fmean(c["score_seconds"] for c in got),
                  "ratio_to_lam0": statistics.fmean(c["step_seconds"] for c in got) / base}
            for lam, got in runs.items()}


def run_seed(s: Settings, seed: int) -> dict[str, Any]:
    """Every stage for one seed; the figures are cached in ``out/seed<seed>/figures.json``."""
    folder = Path(s.out) / f"seed{seed}"
    cache = folder / "figures.json"
    figures: dict[str, Any] = json.loads(cache.read_text()) if cache.is_file() else {}
    started = time.time()
    judge = stage_judge(s, seed)
    figures["judge"] = json.loads((judge / "eval.json").read_text())["heldout"]
    if "table" not in figures:
        debater = stage_debater(s, seed, judge) if s.generations > 0 else None
        figures["table"] = stage_table(s, seed, judge, debater)
        _save(cache, figures)
    policy = figures.setdefault("policy", {})
    for lam in s.lams:
        if f"{lam:g}" not in policy:
            policy[f"{lam:g}"] = stage_policy(s, seed, judge, lam)
            _save(cache, figures)
    figures["seconds"] = figures.get("seconds", 0.0) + time.time() - started
    _save(cache, figures)
    return figures


def _save(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    tmp.replace(path)


def _ms(values: Sequence[float], scale: float = 100.0, digits: int = 1) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values) * scale
    std = statistics.stdev(values) * scale if len(values) > 1 else 0.0
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def render_table(per_seed: dict[int, dict[str, Any]]) -> str:
    """Markdown: judge accuracy per scheme (alone / vs confuser, and on spurious-carry problems), then the policy
    figures per λ; mean ± std over seeds."""
    seeds = sorted(per_seed)
    rows = list(next(iter(per_seed.values()))["table"])
    lines = [f"Judge accuracy on held-out problems, % (mean ± std over seeds {', '.join(map(str, seeds))}):", "",
             "| evidence chosen by | alone / self-play | vs confuser | spurious only, alone | spurious only, vs "
             "confuser |", "|---|---|---|---|---|"]
    for row in rows:
        cells = []
        for column, kind in (("alone", "all"), ("confuser", "all"), ("alone", "spurious"), ("confuser", "spurious")):
            values = [per_seed[s]["table"][row][column][kind] for s in seeds if column in per_seed[s]["table"][row]]
            cells.append(_ms(values))
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lams = list(next(iter(per_seed.values())).get("policy", {}))
    if lams:
        base = [per_seed[s]["policy"]["0"]["step_seconds"] for s in seeds if "0" in per_seed[s]["policy"]]
        lines += ["", "| λ | task reward (held-out pass@1), % | justifiability, % | same answer as baseline, % | "
                  "s / RL step | s scoring / step | step time ÷ λ=0 |", "|---|---|---|---|---|---|---|"]
        for lam in lams:
            got = [per_seed[s]["policy"][lam] for s in seeds if lam in per_seed[s]["policy"]]
            ratio = [g["step_seconds"] / b for g, b in zip(got, base)] if len(base) == len(got) else []
            cells = [_ms([g["task_reward"] for g in got]), _ms([g["justifiability"] for g in got]),
                     _ms([g["same_as_baseline"] for g in got]), _ms([g["step_seconds"] for g in got], 1, 2),
                     _ms([g["score_seconds"] for g in got], 1, 2), _ms(ratio, 1, 2)]
            lines.append(f"| {lam} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = Settings()
    parser.add_argument("--out", default=defaults.out, help="output folder (default runs/debate)")
    parser.add_argument("--seeds", type=int, nargs="+", default=defaults.seeds, help="seeds to run")
    parser.add_argument("--bc", default=defaults.bc, help="BC policy folder per seed, with {seed}")
    parser.add_argument("--data", default=defaults.data, help="quickstart data folder per seed, with {seed}")
    parser.add_argument("--generations", type=int, default=defaults.generations,
                        help="self-play generations (0: no trained debater row)")
    parser.add_argument("--lams", type=float, nargs="*", default=defaults.lams,
                        help="debate weights λ of the policies trained")
    parser.add_argument("--eval-problems", type=int, default=defaults.eval_problems,
                        help="debate problems the judge accuracies are measured on")
    parser.add_argument("--eval-prompts", type=int, default=defaults.eval_prompts,
                        help="held-out prompts the trained policies are evaluated on")
    parser.add_argument("--cost-steps", type=int, default=0,
                        help="also time runs of N RL steps at each λ back to back on the first seed (0: skip)")
    for name in ("judge", "selfplay", "policy"):
        parser.add_argument(f"--{name}-set", dest=f"{name}_overrides", nargs="*", default=[], metavar="KEY=VALUE",
                            help=f"overrides of the {name} recipe")


def settings_from(args: argparse.Namespace) -> Settings:
    return Settings(out=args.out, seeds=list(args.seeds), bc=args.bc, data=args.data, generations=args.generations,
                    lams=list(args.lams), eval_problems=args.eval_problems, eval_prompts=args.eval_prompts,
                    judge_overrides=args.judge_overrides, selfplay_overrides=args.selfplay_overrides,
                    policy_overrides=args.policy_overrides)


def run(args: argparse.Namespace) -> int:
    s = settings_from(args)
    for seed in s.seeds:
        for key, value in (("--bc", s.bc), ("--data", s.data)):
            if s.lams and not Path(value.format(seed=seed)).is_dir():
                raise FileNotFoundError(f"{key} {value.format(seed=seed)}: not found (run `alignrl quickstart "
                                        f"--out runs/qs{seed} --seed {seed}` first, or pass --lams with no value)")
    per_seed = {seed: run_seed(s, seed) for seed in s.seeds}
    out = Path(s.out)
    cost = measure_cost(s, s.seeds[0], args.cost_steps) if args.cost_steps > 0 and s.lams else None
    _save(out / "results.json", {"settings": asdict(s), "seeds": {str(k): v for k, v in per_seed.items()},
                                 "cost": cost})
    text = render_table(per_seed)
    if cost:
        text += ("\nCost per RL step (32 prompts x 8 samples), measured back to back on seed "
                 f"{s.seeds[0]}, {args.cost_steps} steps per run, 2 runs per λ:\n\n"
                 "| λ | s / RL step | s scoring / step | step time ÷ λ=0 |\n|---|---|---|---|\n")
        text += "".join(f"| {lam} | {c['step_seconds']:.2f} | {c['score_seconds']:.2f} | {c['ratio_to_lam0']:.2f} |\n"
                        for lam, c in cost.items())
    (out / "table.md").write_text(text)
    print((out / "table.md").read_text())
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m alignrl.debate.experiments", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
