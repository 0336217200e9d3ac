"""Grading one output against one gold answer.

:func:`prepare` does the in-process part (extraction, normalisation, the string and number fast paths);
what it cannot decide goes to math-verify in a worker process (:mod:`alignrl.grading.pool`), which bounds
its time. :func:`grade` is bounded that way; :func:`grade_local` runs everything in-process, unbounded.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from alignrl.grading.config import GraderConfig, Verdict
from alignrl.grading.extract import extract_answer
from alignrl.grading.normalize import as_number, normalize
from alignrl.grading.numeric import clearly_different, evaluate, evaluate_matrix, matrices_differ

_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")  # an English word, not a \command
_TEXT_ONLY = re.compile(r"^\\(?:text|textbf|mathrm|mbox)\s*\{([^{}]*)\}$")
_LETTERS_ONLY = re.compile(r"^\(?[A-Za-z][A-Za-z ().,'\-]*$")
_EQ = re.compile(r"(?<![<>!:=\\])=(?!=)")


class Pending(NamedTuple):
    """An item :func:`prepare` could not decide: math-verify compares ``answer`` (cleaned) with ``gold``."""

    extracted: str
    answer: str
    gold: str


def _text_answer(s: str, declared: bool = False) -> str | None:
    """Lower-case letters of a word answer (``\\text{(C)}`` -> ``c``); None if it has digits or other LaTeX.

    ``declared``: only when the whole string is one ``\\text{...}`` (a gold answer that says it is text).
    """
    s = s.strip()
    m = _TEXT_ONLY.match(s)
    if declared and not m:
        return None
    inner = m.group(1) if m else s
    if not _LETTERS_ONLY.match(inner):
        return None
    return "".join(c for c in inner.lower() if c.isalpha()) or None


def _rhs(answer: str, gold: str) -> str:
    """``x = 5`` -> ``5`` when the answer has exactly one ``=`` and the gold has none."""
    if _EQ.search(gold):
        return answer
    parts = _EQ.split(answer)
    return parts[1].strip() if len(parts) == 2 and parts[1].strip() else answer


def prepare(output: str, gold: str, config: GraderConfig | None = None) -> Verdict | Pending:
    """A final :class:`Verdict` when extraction and the fast paths decide, else a :class:`Pending` item."""
    config = config or GraderConfig()
    answer = extract_answer(output if isinstance(output, str) else str(output), config)
    if answer is None:
        return Verdict(False, None, "no_answer", "none")
    if len(answer) > config.max_answer_chars:
        return Verdict(False, answer[: config.max_answer_chars], "unparsable", "none")
    gold = str(gold).strip()
    if not gold:
        return Verdict(False, answer, "wrong", "none")
    gold_norm = normalize(gold)
    candidate = _rhs(answer, gold)
    for cand in dict.fromkeys((answer, candidate)):
        if normalize(cand) == gold_norm:
            return Verdict(True, answer, "correct", "exact")
    cand_norm = normalize(candidate)
    gold_pct, ans_pct = "%" in gold, "%" in candidate  # math-verify takes 50% == 0.5 == 50: so do we
    percent = gold_pct or ans_pct
    g, a = as_number(gold_norm), as_number(cand_norm)
    if g is not None and a is not None:
        ok = g == a or (gold_pct and a == g / 100) or (ans_pct and a / 100 == g)
        return Verdict(ok, answer, "correct" if ok else "wrong", "numeric")
    gold_words, ans_words = _text_answer(gold, declared=True), _text_answer(candidate)
    if gold_words and ans_words and (gold_words == ans_words or sorted(gold_words) != sorted(ans_words)):
        ok = gold_words == ans_words  # \text{Friday} vs "friday": case-blind, like math-verify; "A,C" vs "C,A"
        return Verdict(ok, answer, "correct" if ok else "wrong", "exact")  # (same letters) is left to it
    gold_matrix, ans_matrix = evaluate_matrix(gold_norm), evaluate_matrix(cand_norm)
    if gold_matrix is not None and ans_matrix is not None and matrices_differ(gold_matrix, ans_matrix):
        return Verdict(False, answer, "wrong", "numeric")
    if not percent:
        gold_vals = evaluate(gold_norm)
        if gold_vals is not None:  # a constant gold: a different constant, or a sentence, is wrong
            ans_vals = evaluate(cand_norm)
            if ans_vals is not None and clearly_different(gold_vals, ans_vals):
                return Verdict(False, answer, "wrong", "numeric")
            if ans_vals is None and len(_WORD.findall(candidate)) >= 3:
                return Verdict(False, answer, "wrong", "exact")
    if not config.use_math_verify:
        return Verdict(False, answer, "wrong", "exact")
    return Pending(answer, candidate, gold)


def grade_local(output: str, gold: str, config: GraderConfig | None = None) -> Verdict:
    """Grade in this process with no time bound (for trusted inputs and debugging; prefer :func:`grade`)."""
    from alignrl.grading.mvworker import verify_answer

    config = config or GraderConfig()
    item = prepare(output, gold, config)
    if isinstance(item, Verdict):
        return item
    try:
        ok, reason = verify_answer(item.answer, item.gold, config.float_rounding, config.strict)
    except Exception:  # noqa: BLE001  (sympy raises anything)
        ok, reason = False, "unparsable"
    return Verdict(ok, item.extracted, reason, "math_verify")


def grade(output: str, gold: str, config: GraderConfig | None = None) -> Verdict:
    """Grade ``output`` against ``gold``; bounded in time from any thread (uses the shared worker pool)."""
    from alignrl.grading.pool import shared_pool

    item = prepare(output, gold, config)
    if isinstance(item, Verdict):
        return item
    return shared_pool().verify_pending([item], config)[0]
