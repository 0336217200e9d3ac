"""Grading one output against one gold answer.

:func:`prepare` does the in-process part: extraction (:func:`~alignrl.grading.extract.find_answer`; the rules
that choose among answer markers, with an example of each, are in :class:`~alignrl.grading.config.GraderConfig`),
then :func:`compare`: plain-text math written as LaTeX (``18*pi``, ``sqrt(5)/3``), normalisation, and the string
and number fast paths. What it cannot decide goes to math-verify in a worker process (:mod:`alignrl.grading.pool`),
which bounds its time. :func:`grade` is bounded that way; :func:`grade_local` runs everything in-process, unbounded.
"""

from __future__ import annotations

import re
from typing import NamedTuple

from alignrl.grading.config import GraderConfig, Verdict
from alignrl.grading.extract import find_answer
from alignrl.grading.normalize import as_number, normalize, plain_math
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


def _top_level_equals(s: str) -> list[int]:
    """Positions of the ``=`` signs of ``s`` outside any ``{}``, ``()`` or ``[]`` group (``\\sum_{k=1}`` has none)."""
    found, depth, last = [], 0, 0
    for m in _EQ.finditer(s):
        depth += sum(s.count(c, last, m.start()) for c in "{([") - sum(s.count(c, last, m.start()) for c in "})]")
        last = m.start()
        if depth <= 0:
            found.append(m.start())
    return found


def _rhs(answer: str, gold: str) -> str:
    """``x = 5`` -> ``5`` when the answer has exactly one top-level ``=`` and the gold has none."""
    if _top_level_equals(gold):
        return answer
    eqs = _top_level_equals(answer)
    rhs = answer[eqs[0] + 1:].strip() if len(eqs) == 1 else ""
    return rhs or answer


def comparison_form(answer: str, gold: str) -> str:
    """The form of an extracted ``answer`` that is compared with ``gold`` (right-hand side, plain math as LaTeX)."""
    return plain_math(_rhs(answer, plain_math(str(gold).strip())))


def prepare(output: str, gold: str, config: GraderConfig | None = None) -> Verdict | Pending:
    """A final :class:`Verdict` when extraction and the fast paths decide, else a :class:`Pending` item."""
    config = config or GraderConfig()
    answer = find_answer(output if isinstance(output, str) else str(output), config).answer
    if answer is None:
        return Verdict(False, None, "no_answer", "none")
    return compare(answer, gold, config)


def compare(answer: str, gold: str, config: GraderConfig | None = None) -> Verdict | Pending:
    """An extracted ``answer`` against ``gold``: a :class:`Verdict` when the in-process checks decide, else a
    :class:`Pending` item for math-verify (used by :func:`prepare`, and by maj@k to group equivalent answers)."""
    config = config or GraderConfig()
    answer = answer.strip()
    if len(answer) > config.max_answer_chars:
        return Verdict(False, answer[: config.max_answer_chars], "unparsable", "none")
    gold = str(gold).strip()
    if not gold or len(gold) > config.max_gold_chars:  # nothing to compare, or no answer's gold (bounded work)
        return Verdict(False, answer, "wrong", "none")
    gold = plain_math(gold)
    gold_norm = normalize(gold)
    candidate = _rhs(answer, gold)
    plain = plain_math(candidate)
    for cand in dict.fromkeys((answer, candidate, plain)):
        if normalize(cand) == gold_norm:
            return Verdict(True, answer, "correct", "exact")
    candidate = plain
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
