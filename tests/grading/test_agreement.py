"""Agreement with the labelled grader-dev set (the figure to report) and MATH-500 self-consistency."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from alignrl.grading import GraderConfig, as_number, normalize
from alignrl.grading.grader import Pending

LABEL_ERRORS = {k: v for k, v in json.loads((Path(__file__).with_name("label_errors.json")).read_text()).items()
                if not k.startswith("_")}
# A disagreement that is the grader's, not the label's: the answer (1 integer value) is only implied in prose.
KNOWN_MISSES = {"processbench_math:math-791"}


def test_grader_dev_agreement(pool, grader_dev):
    rows = grader_dev
    # agreement, not speed, is measured here: a generous per-answer bound keeps a loaded CI machine from
    # turning a slow-but-correct math-verify call into a timeout verdict
    verdicts = pool.grade_many([(r["output"], r["gold"]) for r in rows], replace(GraderConfig(), timeout=60.0))
    confusion = Counter((bool(r["label"]), v.correct) for r, v in zip(rows, verdicts))
    disagree = {r["row_id"] for r, v in zip(rows, verdicts) if bool(r["label"]) != v.correct}
    raw = 1 - len(disagree) / len(rows)
    kept = [r for r in rows if r["row_id"] not in LABEL_ERRORS]
    excluded = 1 - len(disagree - set(LABEL_ERRORS)) / len(kept)
    print(f"\ngrader-dev: {len(rows)} rows; raw agreement {raw:.4f}; excluding {len(LABEL_ERRORS)} judged label "
          f"errors {excluded:.4f}\nconfusion (label, verdict): {dict(sorted(confusion.items()))}\n"
          f"disagreements: {sorted(disagree)}")
    assert not any(v.reason == "timeout" for v in verdicts)
    assert disagree - set(LABEL_ERRORS) <= KNOWN_MISSES, "a new disagreement: grader regression or label error?"
    assert set(LABEL_ERRORS) <= disagree, "a listed label error now agrees with its label: update label_errors.json"
    assert raw >= 0.995  # the target, on the raw labels (8 of 1648 disagree: 0.9951)
    assert excluded >= 0.999


@pytest.mark.parametrize("form", ["bare", "sentence", "solution"])
def test_math500_gold_grades_correct_against_itself(pool, math500, form):
    make = {"bare": lambda r: r["answer"],
            "sentence": lambda r: f"So the answer is $\\boxed{{{r['answer']}}}$.",
            "solution": lambda r: r["solution"]}[form]
    verdicts = pool.grade_many([(make(r), r["answer"]) for r in math500])
    bad = [(r["unique_id"], r["answer"], v) for r, v in zip(math500, verdicts) if not v.correct]
    assert not bad, bad[:5]
    assert len(verdicts) == 500


def _same(a: str, b: str) -> bool:
    """Independent check for genuinely equivalent gold pairs (skipped in the shifted test)."""
    a, b = normalize(a.split("=")[-1]), normalize(b.split("=")[-1])
    return a == b or (as_number(a) is not None and as_number(a) == as_number(b))


def test_math500_other_problems_answer_grades_wrong(pool, math500):
    pairs = [(f"So the answer is $\\boxed{{{math500[(i + 1) % 500]['answer']}}}$.", r["answer"])
             for i, r in enumerate(math500) if not _same(math500[(i + 1) % 500]["answer"], r["answer"])]
    assert len(pairs) >= 495
    verdicts = pool.grade_many(pairs)
    wrong = [(o, g, v) for (o, g), v in zip(pairs, verdicts) if v.correct or v.reason != "wrong"]
    assert not wrong, wrong[:5]


@pytest.mark.slow
def test_math500_golds_equal_themselves_through_math_verify(pool, math500):
    """The boxed-gold parse path: every gold, sent to math-verify against itself, is correct."""
    items = [Pending(r["answer"], r["answer"], r["answer"]) for r in math500]
    bad = [(p.gold, v) for p, v in zip(items, pool.verify_pending(items)) if not v.correct]
    assert not bad, bad[:5]


def test_some_golds_equal_themselves_through_math_verify(pool, math500):
    golds = [r["answer"] for r in math500 if as_number(normalize(r["answer"])) is None][:40]
    verdicts = pool.verify_pending([Pending(g, g, g) for g in golds])
    assert all(v.correct and v.method == "math_verify" for v in verdicts), list(zip(golds, verdicts))
