"""``alignrl plot RUN_DIR``: PNG curves of a run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path

from alignrl.logging.metrics import read_metrics

PANELS = [
    ("Reward", ["reward_mean", "eval/mean_reward"]),
    ("Pass rate", ["pass_rate", "eval/pass_at_1"]),
    ("KL to reference", ["kl"]),
    ("Entropy", ["entropy"]),
    ("Response length (tokens)", ["response_length"]),
    ("Clip fraction", ["clip_fraction"]),
    ("Grad norm", ["grad_norm"]),
    ("Seconds per step", ["time/generate", "time/score", "time/update"]),
]


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write ``curves.png`` (one panel per metric group that the run logged) and return its path. A panel whose
    values are 0 at every step (e.g. the clip fraction when nothing was clipped) says so in its title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"{run_dir}: the run folder does not exist" if not run_dir.exists()
                                else f"{run_dir}: not a folder; give the run's output_dir")
    records = read_metrics(run_dir / "metrics.jsonl")
    if not records:
        raise FileNotFoundError(f"{run_dir / 'metrics.jsonl'}: no metrics to plot (the run has not logged a step)")
    panels = [(title, [k for k in keys if any(k in r for r in records)]) for title, keys in PANELS]
    panels = [(title, keys) for title, keys in panels if keys]
    cols = 2
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(11, 3.2 * rows), squeeze=False)
    for ax, (title, keys) in zip(axes.flat, panels):
        for key in keys:
            points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float))]
            if points:
                xs, ys = zip(*points)
                ax.plot(xs, ys, marker="o" if len(points) < 15 else None, markersize=3, label=key)
        ax.set_title(title + (" — 0 at every step" if _always_zero(records, keys) else ""))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.tight_layout()
    out_path = Path(out) if out else run_dir / "curves.png"
    fig.savefig(out_path, dpi=110)
    plt.close(fig)
    return out_path


def _always_zero(records: list[dict], keys: list[str]) -> bool:
    values = [r[k] for r in records for k in keys if isinstance(r.get(k), (int, float))]
    return bool(values) and all(v == 0 for v in values)
