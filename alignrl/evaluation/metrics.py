"""Sample-level metrics for answer-graded evaluation: pass@1, unbiased pass@k, maj@k and breakdowns.

Majority vote (maj@k) rule, applied to the first ``k`` samples of a problem:

1. samples whose grader extracted no answer abstain;
2. the others are grouped by mathematical equivalence (``grouping="equivalence"``, the default): two answers are one
   vote when their cosmetic normal forms (:func:`normalize_answer`) are equal or the grader judges them equal
   (:func:`~alignrl.grading.grader.compare`: in-process checks, then math-verify on worker processes with a time
   bound per comparison and a budget for all of them; see :class:`AnswerGrouping`), so ``\\frac12`` and ``0.5``
   are one vote. Each answer joins the first group whose first answer it equals. ``grouping="string"`` groups by
   normal form only;
3. the group with the most votes wins; a tie goes to the group whose first vote came earliest (lowest sample
   index), so the result is deterministic and, for ``k == 1``, equals the first sample;
4. the problem counts as solved when the grader judged the winning group's first sample correct.
   With no extracted answer at all the problem counts as unsolved.

:func:`compute_metrics` says which grouping it used in ``maj_grouping``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

GROUPINGS = ("equivalence", "string")
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


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool],
                  same: Callable[[str, str], bool] | None = None) -> tuple[str | None, bool]:
    """The winning answer's normal form and whether it is correct (see the module docstring for the rule).

    ``same(first, other)``: whether two normal forms (of a group's first answer, then another) are one vote;
    ``None``: only equal normal forms are."""
    votes: dict[str, list[int]] = {}
    for index, answer in enumerate(answers):
        if answer is None or not answer.strip():
            continue
        key = normalize_answer(answer)
        if key not in votes and same is not None:
            key = next((first for first in votes if same(first, key)), key)
        votes.setdefault(key, []).append(index)
    if not votes:
        return None, False
    # dicts keep insertion order = order of first vote, and max() keeps the first maximum: ties go to the earliest
    winner = max(votes, key=lambda key: len(votes[key]))
    return winner, bool(correct[votes[winner][0]])


class AnswerGrouping:
    """Which distinct answers of each problem are mathematically equal, decided through the grader up front.

    Every pair of distinct normal forms among a problem's first ``max_k`` answers is compared with
    :func:`~alignrl.grading.grader.compare` (the first-seen one as the gold; the answers as written, not their
    normal forms); what the in-process checks leave open goes to math-verify on the shared worker pool, at most
    ``timeout`` seconds a pair, in chunks of :attr:`CHUNK`. All of it stops when ``budget_s`` is spent, so the
    grouping takes at most ``budget_s`` plus one chunk's timeouts. A pair left open (timed out, or not reached)
    counts as two different answers; :meth:`describe` says how many there were.
    """

    CHUNK = 16

    def __init__(self, problems: Sequence[dict[str, Any]], max_k: int, timeout: float = 2.0,
                 budget_s: float = 120.0) -> None:
        from alignrl.grading import GraderConfig

        self.timeout, self.budget_s = timeout, budget_s
        self._start = time.monotonic()
        self._config = GraderConfig(timeout=timeout)
        self._equal: set[tuple[str, str]] = set()
        self.stats = {"pairs": 0, "in_process": 0, "math_verify": 0, "timeouts": 0, "unresolved": 0}
        pairs = [pair for p in problems for pair in self._pairs(p["samples"][:max_k])]
        self.stats["pairs"] = len(pairs)
        self._verify(self._decide_in_process(pairs))
        self.budget_ran_out = self.stats["unresolved"] > 0
        self.seconds = time.monotonic() - self._start

    @staticmethod
    def _pairs(samples: Sequence[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
        """``(first form, other form, first answer, other answer)`` for each pair of distinct normal forms."""
        raw: dict[str, str] = {}  # normal form -> the first answer written that way
        for s in samples:
            if s["extracted"] is not None and s["extracted"].strip():
                raw.setdefault(normalize_answer(s["extracted"]), s["extracted"])
        forms = list(raw)
        return [(a, b, raw[a], raw[b]) for i, a in enumerate(forms) for b in forms[i + 1:]]

    def _out_of_time(self) -> bool:
        return time.monotonic() - self._start > self.budget_s

    def _decide_in_process(self, pairs: list[tuple[str, str, str, str]]) -> list[tuple[tuple[str, str], Any]]:
        """Settle what the in-process checks can; the rest as ``((first, other), Pending)``."""
        from alignrl.grading import Verdict
        from alignrl.grading.grader import compare

        pending = []
        for n, (first, other, first_raw, other_raw) in enumerate(pairs):
            if n % 256 == 0 and self._out_of_time():
                self.stats["unresolved"] += len(pairs) - n
                break
            item = compare(other_raw, first_raw, self._config)
            if isinstance(item, Verdict):
                self.stats["in_process"] += 1
                if item.correct:
                    self._equal.add((first, other))
            else:
                pending.append(((first, other), item))
        return pending

    def _verify(self, pending: list[tuple[tuple[str, str], Any]]) -> None:
        from alignrl.grading import shared_pool

        for lo in range(0, len(pending), self.CHUNK):
            if self._out_of_time():
                self.stats["unresolved"] += len(pending) - lo
                return
            chunk = pending[lo:lo + self.CHUNK]
            for (pair, _), verdict in zip(chunk, shared_pool().verify_pending([it for _, it in chunk], self._config)):
                self.stats["math_verify"] += 1
                self.stats["timeouts"] += verdict.reason == "timeout"
                if verdict.correct:
                    self._equal.add(pair)

    def same(self, first: str, other: str) -> bool:
        """Whether ``other`` (a normal form) votes with the group whose first answer has normal form ``first``."""
        return first == other or (first, other) in self._equal

    def describe(self) -> dict[str, Any]:
        """The grouping used, for results.json: method, comparisons made and how each was decided."""
        method = "equivalence"
        if self.budget_ran_out or self.stats["timeouts"]:
            method += (f" (partial: {self.stats['unresolved']} pairs left when the {self.budget_s:.0f} s budget ran "
                       f"out, {self.stats['timeouts']} timed out; those count as different answers)")
        return {"method": method, **self.stats, "timeout_s": self.timeout, "budget_s": self.budget_s,
                "seconds": round(self.seconds, 2)}


def _summary(problems: list[dict[str, Any]], ks: list[int],
             same: Callable[[str, str], bool] | None = None) -> dict[str, Any]:
    samples = [s for p in problems for s in p["samples"]]
    out: dict[str, Any] = {"problems": len(problems), "samples": len(samples)}
    if not problems:
        return out
    out["pass@1"] = sum(sum(s["correct"] for s in p["samples"]) / len(p["samples"]) for p in problems) / len(problems)
    for k in ks:
        out[f"pass@{k}"] = sum(pass_at_k(len(p["samples"]), sum(s["correct"] for s in p["samples"]), k)
                               for p in problems) / len(problems)
    for k in ks:
        wins = [majority_vote([s["extracted"] for s in p["samples"][:k]], [s["correct"] for s in p["samples"][:k]],
                              same)[1] for p in problems]
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


def compute_metrics(problems: list[dict[str, Any]], ks: list[int], grouping: str = "equivalence",
                    timeout: float = 2.0, budget_s: float = 120.0) -> dict[str, Any]:
    """Metrics overall and by ``level`` and ``subject``, and ``maj_grouping``: how maj@k grouped the answers.

    Each problem is a dict with ``level``, ``subject`` and ``samples``: a list (in sample order) of dicts with
    ``correct`` (bool), ``extracted`` (str or None), ``num_tokens`` (int) and ``finish_reason`` ("stop"/"length").
    Every problem must have at least ``max(ks)`` samples. ``grouping``: ``equivalence`` (through the grader, each
    comparison at most ``timeout`` s, all of them within about ``budget_s``; see :class:`AnswerGrouping`) or
    ``string`` (normal forms only).
    """
    if grouping not in GROUPINGS:
        raise ValueError(f"maj@k grouping must be one of {', '.join(GROUPINGS)}, got {grouping!r}")
    for p in problems:
        if len(p["samples"]) < max(ks, default=1):
            raise ValueError(f"a problem has {len(p['samples'])} samples, fewer than k={max(ks)}")
    same, described = None, {"method": "string"}
    if grouping == "equivalence" and any(k > 1 for k in ks):
        groups = AnswerGrouping(problems, max(ks), timeout, budget_s)
        same, described = groups.same, groups.describe()
    elif grouping == "equivalence":
        described = {"method": "equivalence (k = 1: nothing to group)"}
    return {"overall": _summary(problems, ks, same),
            "by_level": {key: _summary(group, ks, same) for key, group in _groups(problems, "level").items()},
            "by_subject": {key: _summary(group, ks, same) for key, group in _groups(problems, "subject").items()},
            "maj_grouping": described}
