"""``alignrl sweep``: one run per grid value (and seed), then the reward-KL frontier.

    alignrl sweep RECIPE --grid algorithm.kl_coef=0,0.01,0.1,1 [--grid KEY=...] [--seeds 0 1 2] [--out DIR] \\
        [section.key=value ...]

Each cell runs into ``OUT/<key>=<value>/.../seed<s>/`` (``trainer.output_dir`` and ``trainer.seed`` overridden);
several ``--grid`` flags make a product (one folder level per key). Resumable: a cell whose last checkpoint says
``"finished": true`` (at ``trainer.max_steps`` or beyond) is not rerun, one with an unfinished checkpoint is
resumed, and one that died before its first checkpoint is started over. Then ``OUT/frontier.json``,
``OUT/frontier.md`` and ``OUT/frontier.png`` summarise every grid point over seeds (mean +- sd): the final
held-out pass@1 (the last ``eval/pass_at_1``), the mean reward and the mean KL to the reference over the last
``window`` logged steps. The KL metric is ``kl_seq`` (sequence-summed, logged by ``demo_kl``) when every run logged
it, else ``kl`` (per-token); ``--kl-metric`` picks one explicitly.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import re
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

WINDOW = 5  # last logged steps averaged for the reward and the KL
RESERVED = ("trainer.output_dir", "trainer.seed")  # set per cell by the sweep itself
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+\-]")


class SweepError(ValueError):
    """A sweep request that cannot run (bad ``--grid``/``--seeds`` syntax...); the message names the flag."""


@dataclass
class Axis:
    """One ``--grid KEY=V1,V2,...`` flag: the dotted recipe key and its values as written."""

    key: str
    values: list[str]


@dataclass
class Cell:
    """One run of the sweep: a value per axis and a seed."""

    values: dict[str, str]
    seed: int
    run_dir: Path
    summary: dict[str, Any] = field(default_factory=dict)
    status: str = ""

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.values.items())


def parse_grid(specs: Sequence[str]) -> list[Axis]:
    """``["a.b=1,2", "c=x,y"]`` -> axes; any malformed flag raises SweepError naming it."""
    if not specs:
        raise SweepError("--grid: give at least one KEY=V1,V2,... (e.g. --grid algorithm.kl_coef=0,0.1)")
    axes: list[Axis] = []
    for spec in specs:
        key, sep, raw = spec.partition("=")
        key = key.strip()
        values = [v.strip() for v in raw.split(",")]
        if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w\-]*(\.[A-Za-z_][\w\-]*)*", key):
            raise SweepError(f"--grid {spec!r}: expected KEY=V1,V2,... with a dotted recipe key, "
                             f"e.g. algorithm.kl_coef=0,0.1")
        if any(not v for v in values):
            raise SweepError(f"--grid {spec!r}: empty value (expected KEY=V1,V2,... with no empty items)")
        if key in RESERVED:
            raise SweepError(f"--grid {spec!r}: {key} is set by the sweep itself (use --seeds / --out)")
        if len(set(values)) != len(values):
            raise SweepError(f"--grid {spec!r}: repeated value")
        if key in (a.key for a in axes):
            raise SweepError(f"--grid {spec!r}: key {key} is already gridded by another --grid flag")
        for value in values:
            try:
                yaml.safe_load(value)
            except yaml.YAMLError as err:
                raise SweepError(f"--grid {spec!r}: value {value!r} is not valid YAML ({err.problem})") from err
        axes.append(Axis(key, values))
    return axes


def cell_dir(out: Path, values: dict[str, str], seed: int) -> Path:
    """``OUT/<key>=<value>/.../seed<s>`` (characters unsafe in a folder name become ``_``)."""
    return out.joinpath(*(_UNSAFE.sub("_", f"{k}={v}") for k, v in values.items()), f"seed{seed}")


def plan_cells(axes: Sequence[Axis], seeds: Sequence[int], out: Path) -> list[Cell]:
    """The product of the axes (first flag outermost), then seeds."""
    cells = [Cell(dict(zip([a.key for a in axes], combo)), seed, Path())
             for combo in itertools.product(*(a.values for a in axes)) for seed in seeds]
    for cell in cells:
        cell.run_dir = cell_dir(out, cell.values, cell.seed)
    if len({c.run_dir for c in cells}) != len(cells):
        raise SweepError("--grid: two values map to the same folder name after sanitising; rename the values")
    return cells


def run_state(run_dir: Path, max_steps: int) -> str:
    """``"finished"`` (skip), ``"resume"`` (unfinished checkpoint), ``"restart"`` (files, no checkpoint), ``"new"``."""
    from alignrl.checkpoint import STATE_FILE, list_checkpoints

    checkpoints = list_checkpoints(run_dir)
    if checkpoints:
        state = json.loads((checkpoints[-1] / STATE_FILE).read_text())
        return "finished" if state.get("finished") and int(state.get("step", 0)) >= max_steps else "resume"
    return "restart" if run_dir.is_dir() and any(run_dir.iterdir()) else "new"


def _mean_last(records: list[dict], key: str, window: int) -> float | None:
    values = [r[key] for r in records if isinstance(r.get(key), (int, float))][-window:]
    return sum(values) / len(values) if values else None


def summarize_run(run_dir: Path, kl_key: str, window: int = WINDOW) -> dict[str, Any]:
    """Final held-out pass@1, mean reward and mean ``kl_key`` over the last ``window`` logged steps of a run."""
    from alignrl.logging.metrics import read_metrics

    records = read_metrics(run_dir / "metrics.jsonl")
    passes = [r["eval/pass_at_1"] for r in records if isinstance(r.get("eval/pass_at_1"), (int, float))]
    return {"steps": records[-1]["step"] if records else 0, "pass_at_1": passes[-1] if passes else None,
            "reward": _mean_last(records, "reward_mean", window), "kl": _mean_last(records, kl_key, window)}


def pick_kl_metric(run_dirs: Sequence[Path]) -> str:
    """``kl_seq`` when every run logged it, else ``kl``."""
    from alignrl.logging.metrics import read_metrics

    logged = [any("kl_seq" in r for r in read_metrics(d / "metrics.jsonl")) for d in run_dirs]
    return "kl_seq" if logged and all(logged) else "kl"


def _stat(values: list[float | None]) -> dict[str, Any]:
    got = [v for v in values if v is not None]
    if not got:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": statistics.fmean(got), "sd": statistics.stdev(got) if len(got) > 1 else 0.0, "n": len(got)}


def frontier_points(cells: Sequence[Cell]) -> list[dict[str, Any]]:
    """One point per grid value (over seeds), in grid order."""
    groups: dict[tuple, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(tuple(cell.values.items()), []).append(cell)
    return [{"values": dict(key), "label": group[0].label, "seeds": [c.seed for c in group],
             **{m: _stat([c.summary.get(m) for c in group]) for m in ("pass_at_1", "reward", "kl")}}
            for key, group in groups.items()]


def _fmt(stat: dict[str, Any]) -> str:
    if stat["mean"] is None:
        return "—"
    return f"{stat['mean']:.4g}" + (f" ± {stat['sd']:.2g}" if stat["n"] > 1 else "")


def frontier_markdown(frontier: dict[str, Any]) -> str:
    keys, kl_key, window = list(frontier["grid"]), frontier["kl_metric"], frontier["window"]
    head = [*keys, "held-out pass@1 (final)", f"reward (last {window} steps)", f"{kl_key} (last {window} steps)",
            "seeds"]
    rows = [[*(p["values"][k] for k in keys), _fmt(p["pass_at_1"]), _fmt(p["reward"]), _fmt(p["kl"]),
             " ".join(str(s) for s in p["seeds"])] for p in frontier["points"]]
    lines = [f"# Sweep frontier: {frontier['recipe']}", "",
             f"Mean ± sd over seeds. KL to the reference: `{kl_key}`, averaged over the last {window} logged steps; "
             "reward: the training `reward_mean` over the same steps; pass@1: the last `eval/pass_at_1`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def plot_frontier(frontier: dict[str, Any], path: Path) -> Path:
    """Reward (and pass@1, when evaluated) against KL: one labelled point per grid value, error bars = sd."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [p for p in frontier["points"] if p["kl"]["mean"] is not None]
    panels = [("reward", f"reward (last {frontier['window']} steps)")]
    if any(p["pass_at_1"]["mean"] is not None for p in points):
        panels.append(("pass_at_1", "held-out pass@1 (final)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    single = len(frontier["grid"]) == 1
    for ax, (metric, title) in zip(axes.flat, panels):
        shown = [p for p in points if p[metric]["mean"] is not None]
        xs, ys = [p["kl"]["mean"] for p in shown], [p[metric]["mean"] for p in shown]
        if single and len(shown) > 1:
            ax.plot(xs, ys, color="0.7", linewidth=1, zorder=1)
        ax.errorbar(xs, ys, xerr=[p["kl"]["sd"] for p in shown], yerr=[p[metric]["sd"] for p in shown],
                    fmt="o", capsize=3, zorder=2)
        for p, x, y in zip(shown, xs, ys):
            ax.annotate(next(iter(p["values"].values())) if single else p["label"], (x, y),
                        textcoords="offset points", xytext=(5, 5), fontsize=8)
        if not shown:
            ax.text(0.5, 0.5, f"no run logged {frontier['kl_metric']}", ha="center", transform=ax.transAxes)
        ax.set_xlabel(f"KL to reference ({frontier['kl_metric']})")
        ax.set_ylabel(title)
        ax.set_title(title + (f" vs KL, by {next(iter(frontier['grid']))}" if single else " vs KL"), fontsize=10)
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_frontier(out: Path, frontier: dict[str, Any]) -> list[Path]:
    """``frontier.json``, ``frontier.md``, ``frontier.png`` in ``out``."""
    (out / "frontier.json").write_text(json.dumps(frontier, indent=2) + "\n")
    (out / "frontier.md").write_text(frontier_markdown(frontier))
    return [out / "frontier.json", out / "frontier.md", plot_frontier(frontier, out / "frontier.png")]


def run_sweep(recipe: str | Path, grid: Sequence[str], seeds: Sequence[int] | None = None,
              out: str | Path | None = None, overrides: Sequence[str] = (), kl_metric: str = "auto",
              window: int = WINDOW, echo: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run every cell not finished yet, then write the frontier files into ``out``; returns the frontier dict.

    Every cell's config is validated before anything runs, so a bad key fails at once (a ConfigError).
    ``seeds`` defaults to the recipe's ``trainer.seed``; ``out`` to ``sweeps/<recipe name>``.
    """
    from alignrl.config import load_config
    from alignrl.loop import train

    main = int(os.environ.get("RANK", "0")) == 0
    say = echo or (lambda line: print(line, file=sys.stderr, flush=True))
    axes = parse_grid(grid)
    if window < 1:
        raise SweepError(f"--window: must be >= 1, got {window}")
    base = load_config(recipe, list(overrides))
    seeds = [base.trainer.seed] if not seeds else list(dict.fromkeys(int(s) for s in seeds))
    out = Path(out) if out is not None else Path("sweeps") / Path(recipe).stem
    cells = plan_cells(axes, seeds, out)
    configs = []
    for cell in cells:
        cell_overrides = [*overrides, *(f"{k}={v}" for k, v in cell.values.items()), f"trainer.seed={cell.seed}",
                          f"trainer.output_dir={cell.run_dir}"]
        configs.append((cell_overrides, load_config(recipe, cell_overrides)))
    for i, (cell, (cell_overrides, config)) in enumerate(zip(cells, configs), 1):
        where = f"[{i}/{len(cells)}] {cell.label} seed {cell.seed}"
        cell.status = run_state(cell.run_dir, config.trainer.max_steps)
        if cell.status == "finished":
            if main:
                say(f"{where}: finished, skipped ({cell.run_dir})")
            continue
        if cell.status == "restart":  # died before its first checkpoint: nothing to resume
            config = load_config(recipe, [*cell_overrides, "trainer.overwrite_output_dir=true"])
        if main:
            say(f"{where}: {'resuming' if cell.status == 'resume' else 'running'} -> {cell.run_dir}")
        start = time.perf_counter()
        train(config, resume=cell.status == "resume")
        if main:
            say(f"{where}: done in {time.perf_counter() - start:.0f} s")
    key = pick_kl_metric([c.run_dir for c in cells]) if kl_metric == "auto" else kl_metric
    for cell in cells:
        cell.summary = summarize_run(cell.run_dir, key, window)
    frontier = {"recipe": str(recipe), "out": str(out), "grid": {a.key: a.values for a in axes}, "seeds": seeds,
                "overrides": list(overrides), "kl_metric": key, "window": window,
                "cells": [{"values": c.values, "seed": c.seed, "run_dir": str(c.run_dir), "status": c.status,
                           **c.summary} for c in cells],
                "points": frontier_points(cells)}
    if main:
        out.mkdir(parents=True, exist_ok=True)
        write_frontier(out, _finite(frontier))
        say(f"frontier: {out / 'frontier.md'}")
    return frontier


def _finite(obj: Any) -> Any:
    """NaN/inf -> None, so frontier.json stays valid JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return obj


class IntermixedParser(argparse.ArgumentParser):
    """Options and ``key=value`` overrides in any order (``RECIPE --grid ... trainer.lr=1e-6 --out DIR``)."""

    def parse_known_args(self, args=None, namespace=None):  # type: ignore[override]
        if getattr(self, "_mixing", False):
            return super().parse_known_args(args, namespace)
        self._mixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._mixing = False


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``alignrl sweep`` arguments (the parser is made order-insensitive)."""
    parser.__class__ = IntermixedParser
    parser.add_argument("recipe", help="recipe YAML")
    parser.add_argument("overrides", nargs="*", help="section.key=value overrides applied to every cell")
    parser.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                        help="a dotted recipe key and its values; repeat the flag for a product grid")
    parser.add_argument("--seeds", nargs="+", default=None, metavar="S",
                        help="seeds per grid value (default: the recipe's trainer.seed)")
    parser.add_argument("--out", default=None, help="sweep folder (default sweeps/<recipe name>)")
    parser.add_argument("--kl-metric", default="auto",
                        help="metrics.jsonl key for the KL axis (default: kl_seq if every run logged it, else kl)")
    parser.add_argument("--window", type=int, default=WINDOW, help="last logged steps averaged (reward, KL)")


def split_seeds(items: Sequence[str] | None) -> tuple[list[int] | None, list[str]]:
    """``--seeds`` items -> (seeds, overrides that followed them: any item with ``=``)."""
    if items is None:
        return None, []
    seeds, extra = [], []
    for item in items:
        if "=" in item:
            extra.append(item)
            continue
        try:
            seeds.append(int(item))
        except ValueError:
            raise SweepError(f"--seeds: {item!r} is not an integer seed") from None
    if not seeds:
        raise SweepError("--seeds: give at least one integer seed")
    return seeds, extra
