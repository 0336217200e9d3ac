"""The quickstart's report: ``report.json``, a readable ``report.md`` and a PNG of held-out accuracy."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignrl.logging.metrics import read_metrics


def write_report(out: Path, report: dict[str, Any], run_dir: Path) -> None:
    records = read_metrics(run_dir / "metrics.jsonl")
    curve = [(0, report["bc_pass_at_1"])] + [(r["step"], r["eval/pass_at_1"]) for r in records
                                              if "eval/pass_at_1" in r]
    report["heldout_curve"] = [{"step": s, "pass_at_1": p} for s, p in curve]
    _plot_learning(out / "learning.png", curve, records, _sft_losses(out / "bc"))
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(_markdown(report))


def _sft_losses(bc_dir: Path) -> list[tuple[int, float]]:
    state = bc_dir / "trainer_state.json"
    if not state.is_file():
        return []
    history = json.loads(state.read_text()).get("log_history", [])
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


def _plot_learning(path: Path, curve: list[tuple[int, float]], records: list[dict],
                   sft_losses: list[tuple[int, float]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    if sft_losses:
        axes[0].plot(*zip(*sft_losses), color="tab:gray")
    axes[0].set(title="BC (SFT) loss", xlabel="SFT step", yscale="log")
    axes[1].plot([s for s, _ in curve], [100 * p for _, p in curve], marker="o", color="tab:green")
    axes[1].set(title="Held-out greedy pass@1 (%) during GRPO", xlabel="GRPO step", ylim=(0, 100))
    if records:
        axes[2].plot([r["step"] for r in records], [100 * r["pass_rate"] for r in records], color="tab:blue")
    axes[2].set(title="Sampled pass rate on training prompts (%)", xlabel="GRPO step", ylim=(0, 100))
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _markdown(r: dict[str, Any]) -> str:
    demos = r["demonstrations"]
    lines = [
        "# alignrl quickstart report", "",
        "Column addition with written carries; a tiny Llama trained from scratch: behaviour cloning on imperfect "
        "demonstrations, then GRPO with the math-verifier reward.", "",
        "| | held-out greedy pass@1 |", "|---|---|",
        f"| after BC (SFT) | {100 * r['bc_pass_at_1']:.1f}% |",
        f"| after GRPO | {100 * r['rl_pass_at_1']:.1f}% |",
        f"| change | {r['improvement_points']:+.1f} points |", "",
        "| | value |", "|---|---|",
        f"| seed | {r['seed']} |",
        f"| device | {r.get('device', 'unknown')} |",
        f"| wall time (all phases) | {r['wall_seconds']:.0f} s |",
        f"| BC time / GRPO time | {r['bc_seconds']:.0f} s / {r['rl_seconds']:.0f} s |",
        f"| model parameters | {r['model_parameters']:,} |",
        f"| demonstrations (wrong share) | {demos['n']:,} ({100 * demos['wrong_share']:.1f}% wrong) |",
        f"| held-out prompts | {r['heldout_prompts']} |", "",
        "## Held-out pass@1 during GRPO", "", "| GRPO step | pass@1 |", "|---|---|",
        *[f"| {p['step']} | {100 * p['pass_at_1']:.1f}% |" for p in r["heldout_curve"]], "",
        "Curves: `learning.png`, `grpo_curves.png`; per-step metrics: `grpo/metrics.jsonl`; the GRPO recipe that "
        "ran: `grpo/run_config.yaml`.", "",
    ]
    return "\n".join(lines)
