"""``alignrl compare``: several RL methods from the same BC start per seed, at an equal rollout budget.

    alignrl compare --base RECIPE.yaml [--methods recipes/compare/grpo.yaml ...] --bc "runs/x/seed{seed}/bc" \\
        --data "runs/x/seed{seed}/data" [--seeds 0 1 2] [--out runs/compare] [--kl-prompts 200] [key=value ...]

A method is a small overlay YAML (default: every ``*.yaml`` in ``recipes/compare/``; its name is the file stem).
A cell's recipe is the base recipe, then the overlay (nested sections merged key by key, except ``algorithm``,
which the overlay replaces whole), then the command-line overrides, then what compare sets itself: ``model.path``
= the ``--bc`` folder of the seed, ``model.reference`` = null (the reference is that BC policy),
``data.train`` / ``data.eval`` = ``{data}/rl_prompts.jsonl`` / ``{data}/heldout.jsonl``, ``trainer.seed`` and
``trainer.output_dir`` = ``OUT/<method>/seed<s>``. Every method samples the same number of completions,
``max_steps x prompts_per_step x n`` of the base recipe; an overlay may change ``n`` or ``prompts_per_step`` only
together with ``max_steps``. Every cell's recipe is validated before the first run. Cells are resumable like
``alignrl sweep`` cells (:func:`alignrl.sweep.run_state`).

After each cell: greedy held-out pass@1 of the final checkpoint on the whole held-out file
(:func:`alignrl.quickstart.run.evaluate_model`; the BC start's once per seed, cached in ``OUT/bc_seed<s>.json``)
and the KL to the BC policy measured the same way for every method: on completions sampled at temperature 1 from
the final policy for the first ``--kl-prompts`` held-out prompts, the exact per-token KL(pi || pi_BC) over the
vocabulary summed over each completion, averaged over completions (an unbiased, low-variance estimate of the
sequence KL). With ``--kl-prompts 0`` the run's last logged KL (``kl_seq``, ``kl_seq_mean`` or ``kl``) is
reported instead, and the table says which. Results: ``OUT/compare.json``, ``OUT/compare.md``, ``OUT/compare.png``.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignrl.compare_report import ALPHA, compare_markdown, plot_compare
from alignrl.stats import welch
from alignrl.sweep import IntermixedParser, SweepError, _finite, _stat, run_state, split_seeds

METHODS_DIR = Path("recipes") / "compare"
RESERVED = ("model.path", "model.reference", "data.train", "data.eval", "trainer.seed", "trainer.output_dir")
LOGGED_KL_KEYS = ("kl_seq", "kl_seq_mean", "kl")  # first one a run logged is its "logged KL"
CLOCK_FILE, RESULT_FILE = "compare_clock.json", "compare_result.json"
ORDER = ("grpo", "rloo", "p3o_v1", "p3o_v2", "demo_kl")  # default methods' order in the table


class CompareError(ValueError):
    """A compare request that cannot run; the one-line message names the flag or the file."""


@dataclass
class Cell:
    """One (method, seed) run."""

    method: str
    overlay: Path
    seed: int
    run_dir: Path
    config: Any = None
    status: str = ""
    result: dict[str, Any] = field(default_factory=dict)


def default_methods() -> list[Path]:
    """Every ``*.yaml`` in ``recipes/compare/`` (of the working directory, else of the alignrl checkout): the
    baselines first (``ORDER``), then the others by name."""
    folder = METHODS_DIR if METHODS_DIR.is_dir() else Path(__file__).resolve().parents[1] / METHODS_DIR
    rank = {name: i for i, name in enumerate(ORDER)}
    return sorted(folder.glob("*.yaml"), key=lambda p: (rank.get(p.stem, len(ORDER)), p.stem))


def _flatten(data: dict, prefix: str = "") -> list[str]:
    keys = []
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        keys += _flatten(value, dotted + ".") if isinstance(value, dict) and value else [dotted]
    return keys


def merge_overlay(base: dict, overlay: dict) -> dict:
    """Base recipe + method overlay: sections merged key by key, ``algorithm`` replaced whole."""
    merged = copy.deepcopy(base)

    def merge(into: dict, new: dict) -> None:
        for key, value in new.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = copy.deepcopy(value)

    for section, value in overlay.items():
        if section == "algorithm" or not isinstance(value, dict) or not isinstance(merged.get(section), dict):
            merged[section] = copy.deepcopy(value)
        else:
            merge(merged[section], value)
    return merged


def rollout_budget(config: Any) -> tuple[int, str]:
    """Completions sampled by a run: (max_steps x prompts_per_step x n, the product written out)."""
    steps, prompts, n = config.trainer.max_steps, config.rollout.prompts_per_step, config.rollout.n
    return steps * prompts * n, f"max_steps {steps} x prompts_per_step {prompts} x n {n} = {steps * prompts * n}"


def seed_inputs(bc: str, data: str, seed: int) -> tuple[Path, Path, Path]:
    """(BC folder, rl_prompts.jsonl, heldout.jsonl) of a seed; a missing one is a CompareError naming the flag."""
    bc_dir, data_dir = Path(bc.format(seed=seed)), Path(data.format(seed=seed))
    if not (bc_dir / "config.json").is_file():
        raise CompareError(f"--bc: no model folder (config.json) for seed {seed} at {bc_dir}")
    files = data_dir / "rl_prompts.jsonl", data_dir / "heldout.jsonl"
    for path in files:
        if not path.is_file():
            raise CompareError(f"--data: {path.name} not found for seed {seed} in {data_dir}")
    return bc_dir, *files


def plan_cells(base: str | Path, methods: Sequence[str | Path], bc: str, data: str, seeds: Sequence[int],
               out: Path, overrides: Sequence[str]) -> tuple[list[Cell], Any]:
    """Validate every cell's recipe and the equal budget before anything runs; returns (cells, base config)."""
    from alignrl.config.loader import apply_override, check_paths, read_yaml
    from alignrl.config.schema import RunConfig
    from alignrl.config.typed import ConfigError, build_dataclass

    for override in overrides:
        if override.partition("=")[0].strip() in RESERVED:
            raise CompareError(f"override {override!r}: {override.partition('=')[0]} is set by compare itself "
                               f"(use --bc / --data / --seeds / --out)")
    if not Path(base).is_file():
        raise CompareError(f"--base: recipe file not found: {base}")
    base_data = read_yaml(base)
    overlays: dict[str, tuple[Path, dict]] = {}
    for path in map(Path, methods):
        if not path.is_file():
            raise CompareError(f"--methods: method file not found: {path}")
        if path.stem in overlays:
            raise CompareError(f"--methods: two method files named {path.stem} ({overlays[path.stem][0]}, {path})")
        overlay = read_yaml(path)
        taken = [k for k in _flatten(overlay) if any(k == r or k.startswith(r + ".") for r in RESERVED)]
        if taken:
            raise CompareError(f"{path}: sets {', '.join(taken)}, which compare sets itself; remove it")
        overlays[path.stem] = path, overlay
    if not overlays:
        raise CompareError("--methods: no method files (and none in recipes/compare/)")
    paths = {seed: seed_inputs(bc, data, seed) for seed in seeds}

    def settings(seed: int, run_dir: Path | None) -> list[str]:
        bc_dir, train_file, heldout = paths[seed]
        return [f"model.path={bc_dir}", "model.reference=null", f"data.train={train_file}", f"data.eval={heldout}",
                f"trainer.seed={seed}", *([f"trainer.output_dir={run_dir}"] if run_dir else [])]

    def config_of(recipe: dict, cell_overrides: list[str], source: str) -> Any:
        recipe = copy.deepcopy(recipe)
        for override in cell_overrides:
            apply_override(recipe, override)
        config = build_dataclass(RunConfig, recipe, "", source)
        check_paths(config, source)
        return config

    base_config = config_of(base_data, [*overrides, *settings(seeds[0], None)], f"{base} (with overrides)")
    budget, budget_text = rollout_budget(base_config)
    cells = []
    for (method, (path, overlay)), seed in itertools.product(overlays.items(), seeds):
        cell = Cell(method, path, seed, out / method / f"seed{seed}")
        try:
            cell.config = config_of(merge_overlay(base_data, overlay), [*overrides, *settings(seed, cell.run_dir)],
                                    f"{path} over {base}")
        except ConfigError as err:
            raise CompareError(str(err)) from err
        if rollout_budget(cell.config)[0] != budget:
            raise CompareError(f"{path}: unequal rollout budget: {rollout_budget(cell.config)[1]} completions, the "
                               f"base recipe samples {budget_text}; adjust trainer.max_steps to keep the product")
        cells.append(cell)
    return cells, base_config


def _clock_callback(run_dir: Path, resume: bool) -> Callable[[int, Any, dict], None]:
    """A ``train`` callback keeping ``run_dir/compare_clock.json``: wall seconds at each step, across resumes
    (steps redone after a resume are counted once)."""
    from alignrl.checkpoint import STATE_FILE, list_checkpoints

    path, checkpoints = run_dir / CLOCK_FILE, list_checkpoints(run_dir) if resume else []
    step = int(json.loads((checkpoints[-1] / STATE_FILE).read_text())["step"]) if checkpoints else 0
    clock = json.loads(path.read_text()) if step and path.is_file() else {}
    offset, start = float(clock.get(str(step), 0.0)), time.perf_counter()

    def record(step: int, components: Any, metrics: dict) -> None:
        if components.accelerator.is_main_process:
            clock[str(step)] = offset + time.perf_counter() - start
            path.write_text(json.dumps(clock))

    return record


def heldout_kl(policy_dir: Path, bc_dir: Path, prompts_file: Path, max_prompts: int, max_new_tokens: int,
               seed: int, stop: Sequence[str] = (), data: Any = None, chunk: int = 16) -> dict[str, float]:
    """Mean over completions sampled at T=1 from the policy of sum_t KL(pi(.|y<t) || pi_BC(.|y<t)) (exact).

    ``data`` (a ``DataConfig``) renders the prompts as in training (prompt field, template, instruction)."""
    import dataclasses

    import torch
    from transformers import AutoModelForCausalLM

    from alignrl.algorithms.kl import exact_kl_per_token
    from alignrl.batch import build_batch
    from alignrl.config.schema import DataConfig
    from alignrl.data import prepare_prompts
    from alignrl.learner.forward import completion_logits
    from alignrl.rollout import SamplingParams
    from alignrl.rollout.hf_engine import HFEngine

    device = "cuda" if torch.cuda.is_available() else None
    engine = HFEngine.from_pretrained(str(policy_dir), dtype="float32", device=device)
    bc = AutoModelForCausalLM.from_pretrained(str(bc_dir), dtype=torch.float32).to(engine.model.device).eval()
    data = dataclasses.replace(data, train=str(prompts_file)) if data else DataConfig(train=str(prompts_file))
    prompts = prepare_prompts(str(prompts_file), "train", data, engine.tokenizer, None, max_new_tokens)
    count = min(max_prompts, len(prompts))
    ids = prompts.token_ids[:count]
    groups = engine.generate(ids, SamplingParams(n=1, temperature=1.0, max_new_tokens=max_new_tokens,
                                                 stop=list(stop), seed=seed))
    total, tokens = 0.0, 0.0
    for lo in range(0, count, chunk):
        hi = min(lo + chunk, count)
        batch = build_batch(ids[lo:hi], groups[lo:hi], prompts.texts[lo:hi], prompts.rows[lo:hi], engine.pad_id)
        with torch.no_grad():
            mask = batch.completion_mask.to(engine.model.device)
            kl = exact_kl_per_token(completion_logits(engine.model, batch, 1.0), completion_logits(bc, batch, 1.0),
                                    mask)
        total, tokens = total + float(kl.sum()), tokens + float(mask.sum())
    return {"kl_seq": total / max(count, 1), "kl_token": total / max(tokens, 1.0), "prompts": count}


def bc_baseline(out: Path, seed: int, bc_dir: Path, heldout: Path, max_new_tokens: int) -> dict[str, Any]:
    """Greedy held-out pass@1 of the BC start, cached in ``OUT/bc_seed<s>.json`` (recomputed if inputs differ)."""
    from alignrl.quickstart.run import evaluate_model

    path, key = out / f"bc_seed{seed}.json", {"bc": str(bc_dir), "heldout": str(heldout),
                                              "max_new_tokens": max_new_tokens}
    if path.is_file() and (cached := json.loads(path.read_text())).get("key") == key:
        return cached
    result = {"key": key, "pass_at_1": evaluate_model(bc_dir, heldout, max_new_tokens)["pass_at_1"]}
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate_cell(cell: Cell, bc_dir: Path, heldout: Path, kl_prompts: int) -> dict[str, Any]:
    """Final pass@1, KL to BC, wall time, samples and the eval curve of a finished cell (cached in the cell)."""
    from alignrl.checkpoint import list_checkpoints
    from alignrl.logging.metrics import read_metrics
    from alignrl.quickstart.run import evaluate_model

    cfg = cell.config
    final = list_checkpoints(cell.run_dir)[-1]
    max_new = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens
    key = {"checkpoint": final.name, "bc": str(bc_dir), "heldout": str(heldout), "max_new_tokens": max_new,
           "kl_prompts": kl_prompts}
    path = cell.run_dir / RESULT_FILE
    if path.is_file() and (cached := json.loads(path.read_text())).get("key") == key:
        return cached
    per_step = cfg.rollout.prompts_per_step * cfg.rollout.n
    records = read_metrics(cell.run_dir / "metrics.jsonl")
    logged = next(((k, r[k]) for k in LOGGED_KL_KEYS for r in reversed(records) if _number(r.get(k))),
                  (None, None))
    clock = json.loads((cell.run_dir / CLOCK_FILE).read_text()) if (cell.run_dir / CLOCK_FILE).is_file() else {}
    last = records[-1]["step"] if records else 0
    result = {
        "key": key, "pass_at_1": evaluate_model(final, heldout, max_new)["pass_at_1"],
        "kl_heldout": heldout_kl(final, bc_dir, heldout, kl_prompts, max_new, cell.seed, cfg.rollout.stop,
                                 cfg.data) if kl_prompts > 0 else None,
        "kl_logged": {"key": logged[0], "value": logged[1]},
        "wall_seconds": clock.get(str(last)),
        "step_seconds": sum(sum(v for k, v in r.items() if k.startswith("time/")) for r in records),
        "samples_used": last * per_step,
        "curve": [{"step": r["step"], "samples": r["step"] * per_step, "pass_at_1": r["eval/pass_at_1"]}
                  for r in records if isinstance(r.get("eval/pass_at_1"), (int, float))],
    }
    path.write_text(json.dumps(_finite(result), indent=2) + "\n")
    return result


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _mean_curve(curves: list[list[dict]]) -> list[dict[str, float]]:
    """Mean and sd over seeds at each sample count every seed evaluated at."""
    steps = [{p["samples"]: p["pass_at_1"] for p in c} for c in curves]
    shared = sorted(set.intersection(*(set(s) for s in steps))) if steps else []
    return [{"samples": x, **_stat([s[x] for s in steps])} for x in shared]


def summarize(cells: Sequence[Cell], bc: dict[int, dict], budget: int) -> dict[str, Any]:
    """Per method (over seeds) and per method pair: the figures compare.json, .md and .png show."""
    methods: dict[str, list[Cell]] = {}
    for cell in cells:
        methods.setdefault(cell.method, []).append(cell)
    rows = {}
    for method, group in methods.items():
        values = [c.result["pass_at_1"] for c in group]
        kl_held = [c.result["kl_heldout"]["kl_seq"] for c in group if c.result["kl_heldout"]]
        kl_log = [c.result["kl_logged"]["value"] for c in group if c.result["kl_logged"]["value"] is not None]
        rows[method] = {
            "overlay": str(group[0].overlay), "seeds": [c.seed for c in group], "pass_at_1": _stat(values),
            "per_seed": values, "delta_vs_bc": _stat([v - bc[c.seed]["pass_at_1"] for v, c in zip(values, group)]),
            "kl_to_bc": _stat(kl_held) if kl_held else _stat(kl_log),
            "kl_source": "heldout" if kl_held else (group[0].result["kl_logged"]["key"] if kl_log else None),
            "wall_seconds": _stat([c.result["wall_seconds"] for c in group]),
            "samples_used": _stat([c.result["samples_used"] for c in group]),
            "curve": _mean_curve([c.result["curve"] for c in group])}
    pairs = [{"a": a, "b": b, "test": welch(rows[a]["per_seed"], rows[b]["per_seed"])}
             for a, b in itertools.combinations(rows, 2)]
    for pair in pairs:
        pair["exceeds_noise"] = None if pair["test"] is None else pair["test"]["p"] < ALPHA
    return {"budget": budget, "bc": {s: b["pass_at_1"] for s, b in bc.items()},
            "bc_pass_at_1": _stat([b["pass_at_1"] for b in bc.values()]), "methods": rows, "pairs": pairs}


def run_compare(base: str | Path, methods: Sequence[str | Path] | None, bc: str, data: str,
                seeds: Sequence[int] | None = None, out: str | Path = "runs/compare", overrides: Sequence[str] = (),
                kl_prompts: int = 200, command: str = "",
                echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train every unfinished cell, evaluate, and write compare.json/.md/.png into ``out``; returns the report."""
    from accelerate import PartialState

    from alignrl.loop import train

    main = int(os.environ.get("RANK", "0")) == 0
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    if kl_prompts < 0:
        raise CompareError(f"--kl-prompts: must be >= 0, got {kl_prompts}")
    out = Path(out)
    methods = list(methods) if methods else default_methods()
    if seeds is None:
        from alignrl.config.loader import read_yaml

        seeds = [int(read_yaml(base).get("trainer", {}).get("seed", 0))] if Path(base).is_file() else [0]
    seeds = list(dict.fromkeys(int(s) for s in seeds))
    cells, base_config = plan_cells(base, methods, bc, data, seeds, out, list(overrides))
    budget = rollout_budget(base_config)[0]
    bc_results: dict[int, dict] = {}
    for i, cell in enumerate(cells, 1):
        where, who = f"[{i}/{len(cells)}]", f"{cell.method} seed {cell.seed}"
        bc_dir, _, heldout = seed_inputs(bc, data, cell.seed)
        if main and cell.seed not in bc_results:
            max_new = base_config.eval.max_new_tokens or base_config.rollout.max_new_tokens
            bc_results[cell.seed] = bc_baseline(out, cell.seed, bc_dir, heldout, max_new)
            say(f"BC start seed {cell.seed} ({bc_dir}): pass@1 {bc_results[cell.seed]['pass_at_1']:.3f}")
        cell.status = run_state(cell.run_dir, cell.config.trainer.max_steps)
        start = time.perf_counter()
        if cell.status != "finished":
            config = cell.config
            if cell.status == "restart":  # died before its first checkpoint: nothing to resume
                config = copy.deepcopy(config)
                config.trainer.overwrite_output_dir = True
            resume = cell.status == "resume"
            if main:
                say(f"{where} {'resuming' if resume else 'running'} {who} -> {cell.run_dir} ...")
            train(config, resume=resume, callbacks=[_clock_callback(cell.run_dir, resume)])
        seconds = time.perf_counter() - start
        if main:
            cell.result = evaluate_cell(cell, bc_dir, heldout, kl_prompts)
            say(f"{where} {who} finished, skipped ({cell.run_dir}): pass@1 {cell.result['pass_at_1']:.3f}"
                if cell.status == "finished" else
                f"{where} {who} done in {seconds:.0f} s: pass@1 {cell.result['pass_at_1']:.3f}")
        PartialState().wait_for_everyone()
    report = {"command": command or f"alignrl compare --base {base}", "base": str(base),
              "methods": {c.method: str(c.overlay) for c in cells}, "bc": bc, "data": data, "seeds": seeds,
              "out": str(out), "overrides": list(overrides), "kl_prompts": kl_prompts}
    if main:
        report["cells"] = [{"method": c.method, "seed": c.seed, "run_dir": str(c.run_dir), "status": c.status,
                            **{k: v for k, v in c.result.items() if k != "key"}} for c in cells]
        report["summary"] = summarize(cells, bc_results, budget)
        report = _finite(report)
        out.mkdir(parents=True, exist_ok=True)
        (out / "compare.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "compare.md").write_text(compare_markdown(report))
        plot_compare(report, out / "compare.png")
        say(f"comparison: {out / 'compare.md'}")
    return report


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``alignrl compare`` arguments (options and overrides in any order)."""
    parser.__class__ = IntermixedParser
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides applied to every cell")
    parser.add_argument("--base", required=True, help="base recipe YAML (sets the rollout budget)")
    parser.add_argument("--methods", nargs="+", default=None, metavar="FILE",
                        help="method overlay YAMLs (default: every *.yaml in recipes/compare/)")
    parser.add_argument("--bc", required=True, help="BC model folder per seed, with {seed}, e.g. runs/x/seed{seed}/bc")
    parser.add_argument("--data", required=True,
                        help="folder per seed holding rl_prompts.jsonl and heldout.jsonl, with {seed}")
    parser.add_argument("--seeds", nargs="+", default=None, metavar="S", help="seeds (default: the base's)")
    parser.add_argument("--out", default="runs/compare", help="comparison folder (default runs/compare)")
    parser.add_argument("--kl-prompts", type=int, default=200,
                        help="held-out prompts for the KL to BC (0 = report the run's last logged KL)")


def run_from_args(args: argparse.Namespace, argv: Sequence[str]) -> int:
    """``alignrl compare`` handler: one-line errors naming the flag or file (exit 2)."""
    try:
        seeds, extra = split_seeds(args.seeds)
        methods = [m for m in args.methods or [] if "=" not in m]
        extra += [m for m in args.methods or [] if "=" in m]
        for pattern, flag in ((args.bc, "--bc"), (args.data, "--data")):
            try:
                pattern.format(seed=0)
            except (KeyError, IndexError, ValueError) as err:
                raise CompareError(f"{flag} {pattern!r}: the only placeholder allowed is {{seed}} ({err})") from None
        run_compare(args.base, methods or None, args.bc, args.data, seeds, args.out, [*args.overrides, *extra],
                    args.kl_prompts, command=shlex.join(["alignrl", *argv]))
    except (CompareError, SweepError) as err:
        print(f"alignrl compare: error: {err}", file=sys.stderr)
        return 2
    return 0
