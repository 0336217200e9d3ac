"""Train suite: alignrl's GRPO step against TRL's ``GRPOTrainer``, each side in fresh child processes, alternately.

Both sides train the quickstart-preset tiny Llama (built in code, seed 0, saved once under ``OUT/train/model``) on
quickstart-task prompts with the math reward, at equal settings: prompts per step, samples per prompt, completion
length, temperature 1, GRPO with a token-mean loss (TRL ``loss_type="dapo"``), ``beta=0``, clip 0.2, one pass per
batch, AdamW at the same constant lr, grad-norm clip 1, one micro-batch per step, float32 on CPU (bf16 on CUDA),
both generating with transformers. Figures per child are medians over the timed steps; entries report the median
and spread over ``repeats`` children per side. Peak memory is the child's ``ru_maxrss`` (from ``os.wait4``).
Scaling curves (step seconds against completion length and against samples per prompt) run each curve in one child
per side, alternating, and are written as ``train_scaling.png`` and a table.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignrl.bench.report import entry
from alignrl.bench.train_child import MARK, PHASES

SIDES = ("alignrl", "trl")


@dataclass(frozen=True)
class TrainSettings:
    """What the train suite runs; the defaults keep the whole suite to a few minutes on 2 idle CPU cores."""

    prompts_per_step: int = 32
    n: int = 8
    max_new_tokens: int = 16
    lr: float = 1e-4
    warmup: int = 2  # steps run before the timed ones (model warm-up, allocator, grader pool start)
    steps: int = 5  # timed steps per child
    scaling_lengths: tuple[int, ...] = (8, 16, 32)  # completion lengths of the first curve (n fixed)
    scaling_n: tuple[int, ...] = (4, 8, 16)  # samples per prompt of the second curve (length fixed)
    scaling_warmup: int = 1
    scaling_steps: int = 2

    def point(self, **changes: int) -> dict[str, Any]:
        base = {"n": self.n, "prompts_per_step": self.prompts_per_step, "max_new_tokens": self.max_new_tokens,
                "lr": self.lr}
        return {**base, **changes}


def prepare_workspace(root: Path, prompts: int = 2048) -> tuple[Path, Path]:
    """The tiny model (quickstart preset, seed 0) and quickstart-task prompts, written once under ``root``."""
    from alignrl.quickstart.task import TaskSpec, make_prompts
    from alignrl.quickstart.tiny_model import build_model, build_tokenizer

    model_dir, prompt_file = root / "model", root / "prompts.jsonl"
    if not (model_dir / "config.json").is_file():
        tokenizer = build_tokenizer()
        partial = root / "model.partial"
        build_model(tokenizer, "quickstart", seed=0).save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        partial.replace(model_dir)
    if not prompt_file.is_file():
        rows = make_prompts(prompts, 1, "train", TaskSpec())
        prompt_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return model_dir, prompt_file


def run_child(side: str, args: dict[str, Any], log: Path) -> tuple[dict[str, Any], float]:
    """Run one side in a fresh interpreter (its run folders in a temporary folder beside ``log``, removed after);
    returns its result and its peak resident memory in MB."""
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    scratch = tempfile.mkdtemp(prefix=f"scratch-{side}-", dir=log.parent)
    args = {**args, "out": scratch}
    with log.open("w") as handle:
        proc = subprocess.Popen([sys.executable, "-m", "alignrl.bench.train_child", side, json.dumps(args)],
                                stdout=subprocess.PIPE, stderr=handle, text=True, env=env)
        stdout = proc.stdout.read() if proc.stdout else ""
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    shutil.rmtree(scratch, ignore_errors=True)
    lines = [line for line in stdout.splitlines() if line.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"bench train: the {side} child failed (exit {proc.returncode}; log {log}):\n{tail}")
    return json.loads(lines[-1][len(MARK):]), usage.ru_maxrss / 1024.0  # Linux reports KiB


def _summary(result: dict[str, Any]) -> dict[str, float]:
    """Per-child medians: step seconds, steps/s, tokens/s and seconds per phase."""
    step = statistics.median(result["step_s"])
    tokens = statistics.median(result["tokens"]) if result["tokens"] else 0.0
    return {"step_s": step, "steps_per_s": 1.0 / step, "tokens_per_s": tokens / step,
            **{f"{k}_s": statistics.median(result["phases"][k]) for k in PHASES}}


def run_train_suite(out: Path, settings: TrainSettings, repeats: int, device: str, precision: str,
                    say: Callable[[str], None]) -> tuple[list[dict[str, Any]], list[str]]:
    """Entries of the train suite and the Markdown of its scaling table; files under ``out/train``."""
    root = out / "train"
    root.mkdir(parents=True, exist_ok=True)
    model, prompts = prepare_workspace(root)
    common = {"model": str(model), "prompts": str(prompts), "precision": precision}
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    versions: dict[str, Any] = {}
    for r in range(repeats):
        for side in SIDES:
            args = {**common, "warmup": settings.warmup,
                    "steps": settings.steps, "points": [settings.point()]}
            result, rss = run_child(side, args, root / f"{side}-r{r}.log")
            versions.update(result["versions"])
            runs[side].append({**_summary(result["results"][0]), "peak_rss_mb": rss, "load": os.getloadavg()[0]})
            s = runs[side][-1]
            say(f"train {side} repeat {r + 1}/{repeats}: {s['steps_per_s']:.3f} steps/s, {s['tokens_per_s']:,.0f} "
                f"tokens/s, peak RSS {rss:,.0f} MB (load {s['load']:.1f})")
    shared = {**asdict(settings), "repeats": repeats, "precision": precision, "model": "quickstart preset",
              "loss": "GRPO token_mean (TRL dapo), beta 0, clip 0.2", "optimizer": "AdamW, constant lr"}
    figures = [("steps_per_s", "steps/s", "higher"), ("tokens_per_s", "tokens/s", "higher"),
               *((f"{k}_s", "s/step", "lower") for k in PHASES), ("peak_rss_mb", "MB", "lower")]
    entries = [entry(f"train/{key}", [x[key] for x in runs["alignrl"]], [x[key] for x in runs["trl"]], unit,
                     better, shared, versions, device, note="peer: TRL GRPOTrainer")
               for key, unit, better in figures]
    curves = scaling(root, common, settings, say)
    for curve, points in curves.items():
        for value, (ours, peer) in points.items():
            entries.append(entry(f"train/scaling/{curve}={value}/step_s", [ours], [peer], "s/step", "lower",
                                 {**shared, curve: value}, versions, device, note="1 child per side per curve"))
    if not curves:
        return entries, []
    plot_scaling(curves, out / "train_scaling.png")
    return entries, [scaling_table(curves)]


def scaling(root: Path, common: dict[str, Any], settings: TrainSettings,
            say: Callable[[str], None]) -> dict[str, dict[int, tuple[float, float]]]:
    """Median step seconds per point of each curve, {curve: {value: (ours, trl)}}."""
    grids = {"max_new_tokens": settings.scaling_lengths, "n": settings.scaling_n}
    curves: dict[str, dict[int, tuple[float, float]]] = {}
    for curve, values in grids.items():
        if not values:
            continue
        points = [settings.point(**{curve: v}) for v in values]
        medians = {}
        for side in SIDES:
            args = {**common, "warmup": settings.scaling_warmup,
                    "steps": settings.scaling_steps, "points": points}
            result, _ = run_child(side, args, root / f"scaling-{curve}-{side}.log")
            medians[side] = [statistics.median(p["step_s"]) for p in result["results"]]
        curves[curve] = {v: (o, t) for v, o, t in zip(values, medians["alignrl"], medians["trl"])}
        say(f"train scaling {curve}: " + ", ".join(f"{v}: {o:.2f} s vs {t:.2f} s"
                                                   for v, (o, t) in curves[curve].items()))
    return curves


def scaling_table(curves: dict[str, dict[int, tuple[float, float]]]) -> str:
    lines = ["### Scaling: seconds per step", "", "| varied | value | alignrl s | TRL s | TRL / alignrl |",
             "|---|---|---|---|---|"]
    for curve, points in curves.items():
        lines += [f"| {curve} | {v} | {o:.3f} | {t:.3f} | {t / o:.2f} |" for v, (o, t) in points.items()]
    return "\n".join(lines) + "\n\n![scaling](train_scaling.png)\n"


def plot_scaling(curves: dict[str, dict[int, tuple[float, float]]], path: Path) -> str:
    """Step seconds against each varied setting, alignrl and TRL; returns the path's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, max(len(curves), 1), figsize=(5 * max(len(curves), 1), 3.6), squeeze=False)
    for ax, (curve, points) in zip(axes[0], curves.items()):
        xs = list(points)
        ax.plot(xs, [points[x][0] for x in xs], "o-", label="alignrl")
        ax.plot(xs, [points[x][1] for x in xs], "s-", label="TRL GRPOTrainer")
        ax.set_xlabel(curve)
        ax.set_ylabel("seconds per step")
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path.name
