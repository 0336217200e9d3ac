"""Cheap, sound *wrong* decisions on math-verify's parsed answers, tried in the worker before ``verify``.

For two plain expressions (no relation, set, tuple, matrix, percentage, bare symbol, infinity, integral or sum),
``verify`` says *correct* only when they are structurally equal, equal after its float rounding, or when
``simplify(gold - answer)`` is zero (the slow step: up to seconds on a loaded machine); all of these need equal
values at every point. :func:`values_differ` evaluates both sides at a few points of their free symbols (points
that satisfy the symbols' sympy assumptions) and reports a difference only when the values differ clearly
(relative tolerance 1e-4, far above ``float_rounding``) at every point. For two unions of intervals with constant
endpoints (not two single intervals, which ``verify`` compares cheaply itself) ``verify`` is exact set equality:
:func:`sets_differ` looks for a point, away from every endpoint, that lies in one set only. :func:`quick_wrong`
combines them over ``verify``'s pairs; it never says *correct*, and leaves everything else to ``verify``. Like
:mod:`alignrl.grading.mvworker`, this imports nothing from alignrl.
"""

from __future__ import annotations

import random
from itertools import product
from typing import Any

from sympy import (Derivative, Expr, I, Integral, Interval, Limit, MatrixBase, MatrixExpr, Product, Rational, Sum,
                   Symbol, UnevaluatedExpr, Union, nan, oo, zoo)

REL_TOL = 1e-4  # the grader's "clearly different" tolerance (alignrl.grading.numeric.clearly_different)
POINTS = 3  # sample points when an expression has free symbols
_DIGITS = 30
_UNSUPPORTED = (Integral, Sum, Product, Limit, Derivative, UnevaluatedExpr)  # costly evalf, or math-verify's %


def plain_expr(e: Any) -> bool:
    """An expression ``verify`` compares by value alone: an ``Expr`` that is no matrix, bare symbol, percentage,
    infinity, integral, sum, limit or derivative (relations, sets and tuples are not ``Expr``)."""
    if not isinstance(e, Expr) or isinstance(e, (MatrixExpr, MatrixBase, Symbol)):
        return False
    return not e.has(*_UNSUPPORTED, oo, -oo, zoo, nan)


def _sample(sym: Symbol, rng: random.Random) -> Any | None:
    """A value for ``sym`` that satisfies its assumptions (a non-integer rational in (1, 3), or such a value
    plus an imaginary part for a symbol declared non-real), else None."""
    re_part = Rational(rng.randrange(1001, 2999), 997)
    facts = sym.assumptions0
    for value in (re_part, re_part + Rational(rng.randrange(300, 900), 997) * I):
        if all(getattr(value, f"is_{key}") is truth for key, truth in facts.items()):
            return value
    return None


def _points(symbols: set, count: int = POINTS) -> list[dict] | None:
    """``count`` substitutions for ``symbols`` (distinct values per symbol), or None when one cannot be sampled."""
    if not symbols:
        return [{}]
    rng = random.Random(12345)
    ordered = sorted(symbols, key=str)
    out = []
    for _ in range(count):
        point = {s: _sample(s, rng) for s in ordered}
        if any(v is None for v in point.values()):
            return None
        out.append(point)
    return out


def _value(e: Expr, point: dict) -> complex | None:
    """``e`` evaluated at ``point`` as a finite complex number, else None."""
    try:
        v = complex(e.evalf(_DIGITS, subs=point) if point else e.evalf(_DIGITS))
    except (TypeError, ValueError, ArithmeticError, RecursionError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def values_differ(gold: Expr, answer: Expr, strict: bool = True, float_rounding: int = 6) -> bool:
    """True when ``gold`` and ``answer`` (plain expressions) differ clearly at every sample point: by more than
    ``REL_TOL`` relatively and than ``10**-float_rounding`` (``verify`` rounds floats to that many decimals)."""
    if not (plain_expr(gold) and plain_expr(answer)):
        return False
    symbols = gold.free_symbols | answer.free_symbols
    if symbols and not strict:  # non-strict verify renames the answer's variables to the gold's
        return False
    points = _points(symbols)
    if points is None:
        return False
    for point in points:
        g, a = _value(gold, point), _value(answer, point)
        if g is None or a is None or abs(g - a) <= max(REL_TOL * max(1.0, abs(g), abs(a)), 10.0 ** -float_rounding):
            return False
    return True


def _endpoint(e: Any) -> float | None:
    """A constant real endpoint as a float (infinities included), else None."""
    if e in (oo, -oo):
        return float(e)
    v = _value(e, {}) if isinstance(e, Expr) and not e.free_symbols else None
    return v.real if v is not None and v.imag == 0 else None


def _flatten(s: Any) -> list:
    """The members of a (possibly nested, unevaluated) union, or ``[s]``."""
    return [p for arg in s.args for p in _flatten(arg)] if isinstance(s, Union) else [s]


def _spans(s: Any) -> list[tuple[float, float]] | None:
    """``(start, end)`` of each interval of an interval or a union of intervals with constant ends, else None."""
    parts = _flatten(s)
    if not parts or not all(isinstance(p, Interval) for p in parts):
        return None
    spans = [(_endpoint(p.start), _endpoint(p.end)) for p in parts]
    return None if any(x is None for span in spans for x in span) else spans  # type: ignore[return-value]


def sets_differ(gold: Any, answer: Any) -> bool:
    """True when two unions of intervals (not two single intervals) differ at a point away from all endpoints."""
    if isinstance(gold, Interval) and isinstance(answer, Interval):
        return False
    g, a = _spans(gold), _spans(answer)
    if g is None or a is None:
        return False
    ends = sorted({x for span in g + a for x in span if abs(x) != float("inf")})
    probes = [ends[0] - 1.0, ends[-1] + 1.0] if ends else [0.0]
    probes += [(x + y) / 2 for x, y in zip(ends, ends[1:]) if y - x > 1e-6 * max(1.0, abs(x), abs(y))]

    def inside(spans: list[tuple[float, float]], p: float) -> bool:
        return any(lo < p < hi for lo, hi in spans)

    return any(inside(g, p) != inside(a, p) for p in probes)


def quick_wrong(gold_parsed: list, answer_parsed: list, strict: bool = True, float_rounding: int = 6) -> bool:
    """True when ``verify(gold_parsed, answer_parsed)`` is sure to be False: every (gold, answer) pair it would
    try is a pair of differing strings, a string against an expression, two clearly differing values or two
    differing unions of intervals."""
    for g, a in product(gold_parsed, answer_parsed):
        if isinstance(g, str) and isinstance(a, str):
            if g.strip() and g.strip() == a.strip():
                return False
        elif isinstance(g, str) or isinstance(a, str):
            continue  # verify compares a string only with a string
        elif not (values_differ(g, a, strict, float_rounding) or sets_differ(g, a)):
            return False
    return True
