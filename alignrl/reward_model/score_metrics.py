"""Statistics of ``alignrl score``: accuracy with a Wilson interval, calibration of sigmoid(margin), groups.

Conventions (stated in every summary):
- A pair is *correct* when ``score_chosen > score_rejected``; a tie (margin exactly 0) counts as wrong, as in
  TRL's ``RewardTrainer`` accuracy. ``accuracy_ties_as_half`` gives the figure with ties counted as 0.5.
- Calibration: the Bradley-Terry model predicts ``p = sigmoid(margin)`` that the chosen response wins. A pair
  tells us the chosen one won, so "chosen wins" alone is always true and its calibration error would be just
  ``1 - mean(p)``. Each pair is therefore counted as two binary events, as if shown in both orders: "chosen beats
  rejected" with ``p`` (label 1) and "rejected beats chosen" with ``1 - p`` (label 0). Events are placed in 10
  equal-width bins of the predicted probability over [0, 1] (bin ``min(floor(10 p), 9)``) and
  ``ECE = sum over bins of (events in bin / all events) * |mean label - mean p|``. The reliability diagram plots
  the same bins; it is symmetric about 0.5 by construction.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from typing import Any

Z_95 = 1.959963984540054
CALIBRATION_BINS = 10
MISSING = "(missing)"
LENGTH_BUCKET = "length_bucket"


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def wilson_interval(successes: float, n: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a proportion (``(nan, nan)`` when ``n`` is 0)."""
    if n == 0:
        return math.nan, math.nan
    share = successes / n
    denominator = 1 + z * z / n
    centre = (share + z * z / (2 * n)) / denominator
    half = z * math.sqrt(share * (1 - share) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def calibration_events(margins: Iterable[float]) -> list[tuple[float, int]]:
    """``(predicted probability, label)`` events: each pair in both orders (see the module docstring)."""
    events = []
    for margin in margins:
        p = sigmoid(margin)
        events += [(p, 1), (1.0 - p, 0)]
    return events


def calibration_bins(margins: Sequence[float], bins: int = CALIBRATION_BINS) -> list[dict[str, Any]]:
    """Every bin of the reliability diagram: edges, event count, mean predicted probability, observed frequency
    (the two means are None for an empty bin)."""
    counts, predicted, observed = [0] * bins, [0.0] * bins, [0.0] * bins
    for p, label in calibration_events(margins):
        b = min(int(p * bins), bins - 1)
        counts[b] += 1
        predicted[b] += p
        observed[b] += label
    return [{"lo": b / bins, "hi": (b + 1) / bins, "count": counts[b],
             "mean_predicted": predicted[b] / counts[b] if counts[b] else None,
             "observed": observed[b] / counts[b] if counts[b] else None} for b in range(bins)]


def expected_calibration_error(margins: Sequence[float], bins: int = CALIBRATION_BINS) -> float:
    """ECE of sigmoid(margin) over the binned two-order events (nan for no pairs)."""
    table = calibration_bins(margins, bins)
    total = sum(row["count"] for row in table)
    if total == 0:
        return math.nan
    return sum(row["count"] / total * abs(row["observed"] - row["mean_predicted"]) for row in table if row["count"])


def accuracy_block(margins: Sequence[float]) -> dict[str, Any]:
    """n, accuracy (ties wrong) with its 95% Wilson interval, accuracy with ties as 0.5, ties, mean margin."""
    n = len(margins)
    correct = sum(1 for m in margins if m > 0)
    ties = sum(1 for m in margins if m == 0)
    lo, hi = wilson_interval(correct, n)
    return {"n": n, "accuracy": correct / n if n else math.nan, "accuracy_ci95": [lo, hi],
            "accuracy_ties_as_half": (correct + 0.5 * ties) / n if n else math.nan, "ties": ties,
            "mean_margin": sum(margins) / n if n else math.nan}


def score_block(scores: Sequence[float]) -> dict[str, Any]:
    """n, mean, sample standard deviation and quantiles (min, 5%, 25%, median, 75%, 95%, max)."""
    n = len(scores)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "quantiles": {}}
    mean = sum(scores) / n
    std = math.sqrt(sum((s - mean) ** 2 for s in scores) / (n - 1)) if n > 1 else 0.0
    ordered = sorted(scores)
    names = {"min": 0.0, "q05": 0.05, "q25": 0.25, "median": 0.5, "q75": 0.75, "q95": 0.95, "max": 1.0}
    return {"n": n, "mean": mean, "std": std, "quantiles": {k: _quantile(ordered, q) for k, q in names.items()}}


def _quantile(ordered: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def length_edges(lengths: Sequence[int], edges: Sequence[int] | None) -> list[int]:
    """Bucket edges in tokens: the ones given (sorted, distinct), else the quartiles of ``lengths``."""
    if edges:
        if any(e < 1 for e in edges):
            raise ValueError(f"length bucket edges must be positive token counts, got {list(edges)}")
        return sorted(set(edges))
    ordered = sorted(lengths)
    if not ordered:
        return []
    return sorted({ordered[min(int(q * len(ordered)), len(ordered) - 1)] for q in (0.25, 0.5, 0.75)})


def length_label(length: int, edges: Sequence[int]) -> str:
    """``<a``, ``a-b`` (inclusive) or ``>=c`` for ``edges`` ``[a, ..., c]``."""
    if not edges:
        return "all"
    if length < edges[0]:
        return f"<{edges[0]}"
    for lo, hi in zip(edges, edges[1:]):
        if lo <= length < hi:
            return _span(lo, hi)
    return f">={edges[-1]}"


def _span(lo: int, hi: int) -> str:
    return str(lo) if hi - 1 == lo else f"{lo}-{hi - 1}"


def length_labels_in_order(edges: Sequence[int]) -> list[str]:
    if not edges:
        return ["all"]
    return [f"<{edges[0]}", *(_span(lo, hi) for lo, hi in zip(edges, edges[1:])), f">={edges[-1]}"]


def group_value(value: Any) -> str:
    """A grouping column's value as a label (missing -> ``(missing)``, lists/objects -> JSON)."""
    if value is None:
        return MISSING
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def grouped(records: Sequence[dict[str, Any]], column: str, value_key: str, block,
            order: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """``block([record[value_key] ...])`` per value of ``column`` (labels in ``order`` first, then sorted)."""
    members: dict[str, list[float]] = {}
    for record in records:
        members.setdefault(group_value(record.get(column)), []).append(record[value_key])
    ranked = [label for label in (order or []) if label in members]
    ranked += sorted(label for label in members if label not in ranked)
    return {label: block(members[label]) for label in ranked}


def clean_numbers(value: Any) -> Any:
    """NaN and infinities as None (strict JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: clean_numbers(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean_numbers(v) for v in value]
    return value
