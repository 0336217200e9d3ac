"""The outputs of ``alignrl compare``: the Markdown table with seed-noise verdicts, and the pass@1-vs-samples PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ALPHA = 0.05  # Welch two-sided p below this: the difference exceeds seed noise


def _fmt(stat: dict[str, Any], digits: int = 3) -> str:
    if stat["mean"] is None:
        return "—"
    return f"{stat['mean']:.{digits}f}" + (f" ± {stat['sd']:.{digits}f}" if stat["n"] > 1 else "")


def compare_markdown(report: dict[str, Any]) -> str:
    s = report["summary"]
    kl_note = (f"exact per-token KL(π‖π_BC) summed over each completion, mean over completions sampled at T=1 from "
               f"the final policy on the first {report['kl_prompts']} held-out prompts"
               if report["kl_prompts"] else "the run's last logged KL (metric named in the cell)")
    lines = [f"# Method comparison at an equal rollout budget ({s['budget']} completions per run)", "",
             f"Command: `{report['command']}`", "",
             f"Base recipe `{report['base']}`; BC start `{report['bc']}`, data `{report['data']}`; seeds "
             f"{' '.join(map(str, report['seeds']))}. pass@1: greedy, every prompt of heldout.jsonl, final "
             f"checkpoint, math reward. KL to BC: {kl_note}. Wall time: training wall clock to the last step. "
             f"compare.png: the in-loop `eval/pass_at_1` (eval.max_prompts prompts) against samples used.", "",
             "| method | held-out pass@1 (mean ± sd) | per seed | Δ vs BC | KL to BC | wall time (s) | samples used |",
             "|---|---|---|---|---|---|---|",
             f"| BC (start) | {_fmt(s['bc_pass_at_1'])} | {' '.join(f'{v:.3f}' for v in s['bc'].values())} | — | 0 "
             f"| — | 0 |"]
    for method, row in s["methods"].items():
        kl = _fmt(row["kl_to_bc"]) + (f" ({row['kl_source']})" if row["kl_source"] not in (None, "heldout") else "")
        lines.append(f"| {method} | {_fmt(row['pass_at_1'])} | {' '.join(f'{v:.3f}' for v in row['per_seed'])} "
                     f"| {_fmt(row['delta_vs_bc'], 3)} | {kl} | {_fmt(row['wall_seconds'], 1)} "
                     f"| {row['samples_used']['mean']:.0f} |")
    lines += ["", f"Seed noise: a difference counts as exceeding it when Welch's two-sided t-test on the per-seed "
                  f"pass@1 values gives p < {ALPHA} (needs 2+ seeds per method; with few seeds the test has little "
                  f"power, so \"within noise\" is not evidence of equality).", ""]
    for pair in s["pairs"]:
        test, name = pair["test"], f"{pair['a']} vs {pair['b']}"
        if test is None:
            lines.append(f"- {name}: not tested (fewer than 2 seeds)")
            continue
        verdict = "exceeds seed noise" if pair["exceeds_noise"] else "within seed noise"
        stats = (f"Welch t = {test['t']:.2f}, df = {test['df']:.1f}" if test["df"] is not None
                 else "sd 0 in both methods")
        lines.append(f"- {name}: Δ = {test['diff']:+.3f}, {stats}, p = {test['p']:.3g}: {verdict}")
    return "\n".join(lines) + "\n"


def plot_compare(report: dict[str, Any], path: Path) -> Path:
    """Held-out pass@1 against samples used: mean over seeds, ±sd band, one line per method; BC as a line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["summary"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for i, (method, row) in enumerate(s["methods"].items()):
        color = f"C{i}"
        xs, ys = [p["samples"] for p in row["curve"]], [p["mean"] for p in row["curve"]]
        sds = [p["sd"] for p in row["curve"]]
        ax.plot(xs, ys, marker=".", color=color, label=f"{method} (eval/pass_at_1)")
        ax.fill_between(xs, [y - d for y, d in zip(ys, sds)], [y + d for y, d in zip(ys, sds)], color=color,
                        alpha=0.2)
        final = row["pass_at_1"]
        ax.errorbar([s["budget"]], [final["mean"]], yerr=[final["sd"]], fmt="D", color=color, capsize=3)
    if s["bc_pass_at_1"]["mean"] is not None:
        ax.axhline(s["bc_pass_at_1"]["mean"], color="0.4", linestyle="--", label="BC start (all held-out)")
    ax.plot([], [], "D", color="0.3", label="final checkpoint (all held-out, ±sd)")
    ax.set_xlim(left=0)
    ax.set_xlabel("samples used (step × prompts_per_step × n)")
    ax.set_ylabel("held-out pass@1")
    ax.set_title(f"Held-out pass@1 vs samples, mean ± sd over {len(report['seeds'])} seed(s)", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
