"""Bench entries and their outputs: ``bench.json`` (a list of entries), ``bench.md`` and PNG bar charts.

An entry compares one figure of ours against the peer measured in the same run: ``name`` (``suite/figure``),
``ours``, ``peer`` (None where there is no peer or the suite was skipped), ``ratio`` (ours / peer), ``unit``,
``better`` (``higher`` or ``lower``), ``spread`` (min and max over repeats of ours and of the peer), ``settings``,
``versions``, ``device`` and ``note`` (e.g. ``skipped: vLLM not installed``).
"""

from __future__ import annotations

import json
import os
import platform
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

FIELDS = ("name", "ours", "peer", "ratio", "unit", "better", "spread", "settings", "versions", "device", "note")


def device_name() -> str:
    """The device that produced the figures: the GPU's name, else the CPU model and core count."""
    import torch

    if torch.cuda.is_available():
        return f"cuda: {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"cpu: {cpu}, {os.cpu_count()} cores"


def median_spread(values: Sequence[float]) -> tuple[float | None, list[float] | None]:
    """Median and [min, max] of ``values`` (None, None when empty)."""
    if not values:
        return None, None
    return statistics.median(values), [min(values), max(values)]


def entry(name: str, ours: Sequence[float], peer: Sequence[float] | None, unit: str, better: str,
          settings: dict[str, Any], versions: dict[str, Any], device: str, note: str = "") -> dict[str, Any]:
    """One comparison from the per-repeat figures of each side (median and spread of each)."""
    ours_mid, ours_range = median_spread(list(ours))
    peer_mid, peer_range = median_spread(list(peer or []))
    ratio = ours_mid / peer_mid if ours_mid is not None and peer_mid else None
    return {"name": name, "ours": ours_mid, "peer": peer_mid, "ratio": ratio, "unit": unit, "better": better,
            "spread": {"ours": ours_range, "peer": peer_range}, "settings": settings, "versions": versions,
            "device": device, "note": note}


def skipped(name: str, reason: str, device: str, versions: dict[str, Any]) -> dict[str, Any]:
    """An entry for a suite that did not run, saying why."""
    return {"name": name, "ours": None, "peer": None, "ratio": None, "unit": "", "better": "", "spread": None,
            "settings": {}, "versions": versions, "device": device, "note": f"skipped: {reason}"}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.3g}"


def table(entries: Sequence[dict[str, Any]]) -> str:
    """The entries as a Markdown table (median, spread over repeats, ratio ours / peer)."""
    lines = ["| figure | ours | spread | peer | spread | ratio ours/peer | unit (better) | note |",
             "|---|---|---|---|---|---|---|---|"]
    for e in entries:
        spread = e["spread"] or {}
        cells = ["-" if not spread.get(side) else f"{_fmt(spread[side][0])}-{_fmt(spread[side][1])}"
                 for side in ("ours", "peer")]
        ratio = "-" if e["ratio"] is None else f"{e['ratio']:.2f}"
        unit = f"{e['unit']} ({e['better']})" if e["better"] else e["unit"]
        lines.append(f"| {e['name']} | {_fmt(e['ours'])} | {cells[0]} | {_fmt(e['peer'])} | {cells[1]} | {ratio} | "
                     f"{unit} | {e['note']} |")
    return "\n".join(lines) + "\n"


def bar_chart(entries: Sequence[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Horizontal bars of ours / peer per entry (1 = parity; right of 1 is better for ours); None if no ratios."""
    rows = [e for e in entries if e["ratio"]]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = [e["ratio"] if e["better"] == "higher" else 1.0 / e["ratio"] for e in rows]
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(rows) + 1.4))
    ax.barh([e["name"] for e in rows], gains, color=["tab:green" if g >= 1 else "tab:red" for g in gains])
    ax.axvline(1.0, color="black", linewidth=1)
    ax.set_xlabel("speed-up of ours over the peer (x; memory: peer / ours)")
    ax.set_title(title)
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_report(out: Path, entries: Sequence[dict[str, Any]], header: str, extra_md: Sequence[str] = ()) -> None:
    """``bench.json``, ``bench.md`` and one ``bench_SUITE.png`` per suite with ratios; each written atomically."""
    for e in entries:
        missing = [k for k in FIELDS if k not in e]
        if missing:
            raise ValueError(f"bench entry {e.get('name')!r} lacks {missing}")
    _atomic(out / "bench.json", json.dumps(list(entries), indent=2) + "\n")
    charts = []
    for suite in dict.fromkeys(e["name"].split("/")[0] for e in entries):
        chart = bar_chart([e for e in entries if e["name"].startswith(suite + "/")], out / f"bench_{suite}.png",
                          f"alignrl bench: {suite} ({entries[0]['device']})")
        if chart:
            charts.append(f"![{suite}]({chart.name})")
    body = [header, "", table(entries), *extra_md, *charts]
    _atomic(out / "bench.md", "\n".join(body) + "\n")


def _atomic(path: Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    partial.replace(path)
