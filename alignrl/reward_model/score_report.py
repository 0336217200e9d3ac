"""Files of ``alignrl score``: per-row JSON lines, ``summary.json``, ``summary.md`` and PNG plots, written
through a staging folder so that a failed run replaces nothing."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from alignrl.reward_model.pairs import BadRow
from alignrl.reward_model.score_metrics import clean_numbers

OUTPUTS = {"pairs": ("pairs.jsonl", "summary.json", "summary.md", "reliability.png", "margin_hist.png"),
           "responses": ("scores.jsonl", "summary.json", "summary.md", "score_hist.png")}
BAD_ROWS = "bad_rows.jsonl"
ALL_OUTPUTS = {name for names in OUTPUTS.values() for name in names} | {BAD_ROWS}


def _json_line(record: dict[str, Any]) -> str:
    return json.dumps(clean_numbers(record), ensure_ascii=False, default=str) + "\n"


def write_outputs(out: Path, mode: str, records: list[dict[str, Any]], summary: dict[str, Any],
                  bad: list[BadRow]) -> list[Path]:
    """Render every file of ``mode`` into a staging folder inside ``out``, then move them in; files of an earlier
    run that this one does not produce (another mode's, an old ``bad_rows.jsonl``) are removed last."""
    out.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=".score-staging-", dir=out))
    try:
        rows_name = OUTPUTS[mode][0]
        (stage / rows_name).write_text("".join(_json_line(r) for r in records), encoding="utf-8")
        (stage / "summary.json").write_text(json.dumps(summary, indent=2, ensure_ascii=False, default=str) + "\n",
                                            encoding="utf-8")
        (stage / "summary.md").write_text(render_markdown(summary), encoding="utf-8")
        if mode == "pairs":
            plot_reliability(summary, stage / "reliability.png")
            plot_margins([r["margin"] for r in records], stage / "margin_hist.png")
        else:
            plot_scores([r["score"] for r in records], stage / "score_hist.png")
        if bad:
            (stage / BAD_ROWS).write_text("".join(_json_line({"index": b.index, "reason": b.reason}) for b in bad),
                                          encoding="utf-8")
        written = sorted(p.name for p in stage.iterdir())
        for name in written:
            os.replace(stage / name, out / name)
        for name in sorted(ALL_OUTPUTS - set(written)):
            (out / name).unlink(missing_ok=True)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return [out / name for name in written]


def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _interval(pair: list[float | None]) -> str:
    return "n/a" if pair[0] is None else f"{_pct(pair[0])} – {_pct(pair[1])}"


def _settings_line(summary: dict[str, Any]) -> str:
    s = summary["settings"]
    return (f"Model `{s['model']}` on `{s['data']}` (split `{s['split']}`): batch {s['batch_size']}, max length "
            f"{s['max_length']} tokens, truncation side {s['truncation_side']}, device {s['device']}, dtype "
            f"{s['dtype']}; {summary['seconds']:.1f} s of scoring.")


def render_markdown(summary: dict[str, Any]) -> str:
    """``summary.md``: the headline table, the group tables, the calibration bins and the conventions."""
    lines = [f"# Reward-model scores ({summary['mode']})", "", _settings_line(summary), ""]
    counts = summary["counts"]
    if summary["mode"] == "pairs":
        lines += ["| metric | value |", "|---|---|",
                  f"| pairs | {summary['n']} |",
                  f"| accuracy (ties wrong) | {_pct(summary['accuracy'])} "
                  f"(95% CI {_interval(summary['accuracy_ci95'])}) |",
                  f"| accuracy (ties as 0.5) | {_pct(summary['accuracy_ties_as_half'])} |",
                  f"| mean margin | {_num(summary['mean_margin'])} |",
                  f"| ECE of sigmoid(margin) | {_num(summary['ece'])} |"]
        lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in counts.items() if key != "pairs"]
        for column, table in summary["groups"].items():
            lines += ["", f"## Accuracy by {column}", "",
                      f"| {column} | pairs | accuracy | 95% CI | mean margin | ties |", "|---|---|---|---|---|---|"]
            lines += [f"| {label} | {b['n']} | {_pct(b['accuracy'])} | {_interval(b['accuracy_ci95'])} | "
                      f"{_num(b['mean_margin'])} | {b['ties']} |" for label, b in table.items()]
        lines += ["", "## Calibration (reliability.png)", "", "| predicted p | events | mean p | observed |",
                  "|---|---|---|---|"]
        lines += [f"| {b['lo']:.1f}–{b['hi']:.1f} | {b['count']} | {_num(b['mean_predicted'])} | "
                  f"{_num(b['observed'])} |" for b in summary["calibration_bins"]]
    else:
        q = summary["quantiles"]
        lines += ["| metric | value |", "|---|---|", f"| responses | {summary['n']} |",
                  f"| mean score | {_num(summary['mean'])} |", f"| std | {_num(summary['std'])} |"]
        lines += [f"| {name} | {_num(value)} |" for name, value in q.items()]
        lines += [f"| {key.replace('_', ' ')} | {value} |" for key, value in counts.items() if key != "responses"]
        for column, table in summary["groups"].items():
            lines += ["", f"## Scores by {column}", "", f"| {column} | responses | mean | std | median |",
                      "|---|---|---|---|---|"]
            lines += [f"| {label} | {b['n']} | {_num(b['mean'])} | {_num(b['std'])} | "
                      f"{_num(b['quantiles'].get('median'))} |" for label, b in table.items()]
    if summary["bad_rows"]:
        lines += ["", f"## Bad rows skipped ({counts['bad_rows_skipped']}; all in bad_rows.jsonl)", ""]
        lines += [f"- row {b['index']}: {b['reason']}" for b in summary["bad_rows"][:20]]
    lines += ["", "## Conventions", ""]
    lines += [f"- **{name}**: {text}" for name, text in summary["conventions"].items()]
    return "\n".join(lines) + "\n"


def _figure(width: float = 6.0, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


def plot_reliability(summary: dict[str, Any], path: Path) -> Path:
    """Observed frequency against mean predicted probability per bin (bar width = bin), with the diagonal."""
    fig = _figure(6, 6)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    filled = [b for b in summary["calibration_bins"] if b["count"]]
    ax.bar([b["lo"] for b in filled], [b["observed"] for b in filled], width=0.1, align="edge",
           edgecolor="black", alpha=0.6, label="observed frequency")
    ax.plot([b["mean_predicted"] for b in filled], [b["observed"] for b in filled], "o-", color="C3",
            label="observed vs the bin's mean p")
    for b in filled:
        ax.annotate(str(b["count"]), (b["lo"] + 0.05, min(b["observed"] + 0.02, 0.98)), ha="center", fontsize=7)
    ece = summary.get("ece")
    ax.set_title(f"Reliability of sigmoid(margin): ECE {_num(ece)}, {summary['n']} pairs (x2 orders)")
    ax.set_xlabel("predicted probability that the first response wins")
    ax.set_ylabel("observed frequency")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def _histogram(ax, values: list[float], bins: int = 40, **kwargs) -> None:
    finite = [v for v in values if math.isfinite(v)]
    if finite:
        ax.hist(finite, bins=bins, **kwargs)


def plot_margins(margins: list[float], path: Path) -> Path:
    """Histogram of score_chosen - score_rejected, wrong (<= 0) and correct (> 0) pairs in two colours."""
    fig = _figure()
    ax = fig.add_subplot()
    finite = [m for m in margins if math.isfinite(m)]
    if finite:
        lo, hi = min(finite), max(finite)
        edges = [lo + (hi - lo) * i / 40 for i in range(41)] if hi > lo else 40
        _histogram(ax, [m for m in finite if m > 0], bins=edges, color="C2", alpha=0.8, label="correct (> 0)")
        _histogram(ax, [m for m in finite if m <= 0], bins=edges, color="C3", alpha=0.8, label="wrong or tie (<= 0)")
    ax.axvline(0, color="black", linewidth=1)
    ax.set_xlabel("margin = score(chosen) - score(rejected)")
    ax.set_ylabel("pairs")
    ax.set_title(f"Margins of {len(margins)} pairs")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def plot_scores(scores: list[float], path: Path) -> Path:
    """Histogram of single-response scores."""
    fig = _figure()
    ax = fig.add_subplot()
    _histogram(ax, scores, color="C0")
    ax.set_xlabel("score")
    ax.set_ylabel("responses")
    ax.set_title(f"Scores of {len(scores)} responses")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path
