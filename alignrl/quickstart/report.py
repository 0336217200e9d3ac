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
    during = during_training_prompts(report)
    report["heldout_curve"] = [{"step": s, "pass_at_1": p, "prompts": report["heldout_prompts"] if s == 0 else during}
                               for s, p in curve]
    _plot_learning(out / "learning.png", curve, records, _sft_losses(out / "bc"), during)
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out / "report.md").write_text(_markdown(report))


def during_training_prompts(report: dict[str, Any]) -> int:
    """How many held-out prompts the evaluations during GRPO use (``eval.max_prompts``; all when unset)."""
    limit = report["settings"]["grpo_recipe"].get("eval", {}).get("max_prompts")
    return report["heldout_prompts"] if limit is None else min(int(limit), report["heldout_prompts"])


def _sft_losses(bc_dir: Path) -> list[tuple[int, float]]:
    state = bc_dir / "trainer_state.json"
    if not state.is_file():
        return []
    history = json.loads(state.read_text()).get("log_history", [])
    return [(h["step"], h["loss"]) for h in history if "loss" in h]


def _plot_learning(path: Path, curve: list[tuple[int, float]], records: list[dict],
                   sft_losses: list[tuple[int, float]], during: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    if sft_losses:
        axes[0].plot(*zip(*sft_losses), color="tab:gray")
    axes[0].set(title="BC (SFT) loss", xlabel="SFT step", yscale="log")
    axes[1].plot([s for s, _ in curve], [100 * p for _, p in curve], marker="o", color="tab:green")
    axes[1].set(title=f"Held-out greedy pass@1 (%) during GRPO\n(step 0: BC on all; later: first {during} prompts)",
                xlabel="GRPO step", ylim=(0, 100))
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
    during = r["heldout_curve"][-1]["prompts"] if r["heldout_curve"] else r["heldout_prompts"]
    lines = [
        "# alignrl quickstart report", "",
        "Column addition with written carries; a tiny Llama trained from scratch: behaviour cloning on imperfect "
        "demonstrations, then GRPO with the math-verifier reward.", "",
        f"| | held-out greedy pass@1 (all {r['heldout_prompts']} held-out prompts) |", "|---|---|",
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
        "## Held-out pass@1 during GRPO", "",
        f"Evaluated on the first {during} of the {r['heldout_prompts']} held-out prompts (the recipe's "
        f"`eval.max_prompts`), so these differ slightly from the table above; step 0 is the BC model on all "
        f"{r['heldout_prompts']}.", "",
        "| GRPO step | held-out prompts | pass@1 |", "|---|---|---|",
        *[f"| {p['step']} | {p.get('prompts', '')} | {100 * p['pass_at_1']:.1f}% |" for p in r["heldout_curve"]],
        "",
        "Curves: `learning.png`, `grpo_curves.png`; per-step metrics: `grpo/metrics.jsonl`; the GRPO recipe that "
        "ran: `grpo/run_config.yaml`.", "",
    ]
    return "\n".join(lines)
