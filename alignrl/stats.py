"""Small statistics for comparing methods over seeds (no scipy dependency): Welch's t-test."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (Lentz continued fraction, as Numerical Recipes' betai/betacf)."""
    if x <= 0.0 or x >= 1.0:
        return max(0.0, min(1.0, x))
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    tiny = 1e-300

    def nonzero(v: float) -> float:
        return v if abs(v) > tiny else tiny

    c, d = 1.0, 1.0 / nonzero(1.0 - (a + b) * x / (a + 1))
    h = d
    for m in range(1, 500):
        for aa in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                   -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 / nonzero(1.0 + aa * d)
            c = nonzero(1.0 + aa / c)
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h * math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                        + b * math.log1p(-x)) / a


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, float] | None:
    """Welch's two-sided t-test of mean(a) - mean(b); None with fewer than 2 values on a side."""
    if len(a) < 2 or len(b) < 2:
        return None
    diff = statistics.fmean(a) - statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0:
        return {"diff": diff, "t": math.copysign(math.inf, diff) if diff else 0.0, "df": math.nan,
                "p": 0.0 if diff else 1.0}
    t = diff / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return {"diff": diff, "t": t, "df": df, "p": _betainc(df / 2, 0.5, df / (df + t * t))}
