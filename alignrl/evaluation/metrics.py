"""Sample-level metrics for answer-graded evaluation: pass@1, unbiased pass@k, maj@k and breakdowns.

Majority vote (maj@k) rule, applied to the first ``k`` samples of a problem:

1. samples whose grader extracted no answer abstain;
2. the others are grouped by :func:`normalize_answer` of the extracted answer (a cosmetic string normalisation,
   not mathematical equivalence: ``\\frac12`` and ``0.5`` are different votes);
3. the group with the most votes wins; a tie goes to the group whose first vote came earliest (lowest sample
   index), so the result is deterministic and, for ``k == 1``, equals the first sample;
4. the problem counts as solved when the grader judged the winning group's first sample correct.
   With no extracted answer at all the problem counts as unsolved.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

# LaTeX decorations that never change an answer's value.
_DROP = [r"\left", r"\right", r"\!", r"\,", r"\;", r"\:", r"\displaystyle", "$"]
_DEGREES = re.compile(r"\^\s*\{?\\circ\}?")


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): ``1 - C(n-c, k) / C(n, k)``, as a stable running product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def default_ks(n: int) -> list[int]:
    """Powers of two up to ``n`` (1, 2, 4, ...)."""
    ks, k = [], 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


def normalize_answer(answer: str) -> str:
    """A cosmetic normal form for vote grouping: no whitespace or sizing macros, ``dfrac``/``tfrac`` -> ``frac``,
    no degree marks, ``\\text{}`` unwrapped, no trailing period."""
    text = answer
    for token in _DROP:
        text = text.replace(token, "")
    text = text.replace(r"\dfrac", r"\frac").replace(r"\tfrac", r"\frac")
    text = _DEGREES.sub("", text)
    text = re.sub(r"\\(?:text|textbf|mathrm|mbox)\{([^{}]*)\}", r"\1", text)
    text = re.sub(r"\s+", "", text)
    return text.rstrip(".")


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool]) -> tuple[str | None, bool]:
    """The winning normalised answer and whether it is correct (see the module docstring for the rule)."""
    votes: dict[str, list[int]] = {}
    for index, answer in enumerate(answers):
        if answer is not None and answer.strip():
            votes.setdefault(normalize_answer(answer), []).append(index)
    if not votes:
        return None, False
    # dicts keep insertion order = order of first vote, and max() keeps the first maximum: ties go to the earliest
    winner = max(votes, key=lambda key: len(votes[key]))
    return winner, bool(correct[votes[winner][0]])


def _summary(problems: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    samples = [s for p in problems for s in p["samples"]]
    out: dict[str, Any] = {"problems": len(problems), "samples": len(samples)}
    if not problems:
        return out
    out["pass@1"] = sum(sum(s["correct"] for s in p["samples"]) / len(p["samples"]) for p in problems) / len(problems)
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(len(p["samples"]), sum(s["correct"] for s in p["samples"]), k)
                               for p in problems) / len(problems)
    for k in ks:
        wins = [majority_vote([s["extracted"] for s in p["samples"][:k]], [s["correct"] for s in p["samples"][:k]])[1]
                for p in problems]
        out[f"maj@{k}"] = sum(wins) / len(problems)
    out["mean_response_tokens"] = sum(s["num_tokens"] for s in samples) / len(samples)
    out["truncated_share"] = sum(s["finish_reason"] == "length" for s in samples) / len(samples)
    out["no_answer_share"] = sum(s["extracted"] is None for s in samples) / len(samples)
    return out


def _sort_key(key: str) -> tuple[int, float | str]:
    try:
        return (0, float(key))
    except ValueError:
        return (1, key)


def _groups(problems: Iterable[dict[str, Any]], field: str) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = {}
    for p in problems:
        groups.setdefault(str(p.get(field, "unknown")), []).append(p)
    return {key: groups[key] for key in sorted(groups, key=_sort_key)}


def compute_metrics(problems: list[dict[str, Any]], ks: list[int]) -> dict[str, Any]:
    """Metrics overall and by ``level`` and ``subject``.

    Each problem is a dict with ``level``, ``subject`` and ``samples``: a list (in sample order) of dicts with
    ``correct`` (bool), ``extracted`` (str or None), ``num_tokens`` (int) and ``finish_reason`` ("stop"/"length").
    Every problem must have at least ``max(ks)`` samples.
    """
    for p in problems:
        if len(p["samples"]) < max(ks, default=1):
            raise ValueError(f"a problem has {len(p['samples'])} samples, fewer than k={max(ks)}")
    return {"overall": _summary(problems, ks),
            "by_level": {key: _summary(group, ks) for key, group in _groups(problems, "level").items()},
            "by_subject": {key: _summary(group, ks) for key, group in _groups(problems, "subject").items()}}
