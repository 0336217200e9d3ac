"""pass@k against brute-force enumeration, maj@k on hand cases, metric breakdowns."""

from __future__ import annotations

import itertools

import pytest

from alignrl.evaluation.metrics import AnswerGrouping, compute_metrics, default_ks, majority_vote, normalize_answer, \
    pass_at_k


def brute_force_pass_at_k(n: int, c: int, k: int) -> float:
    """The share of the k-subsets of n samples (the first c correct) that hold at least one correct sample."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 9))
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_force_pass_at_k(n, c, k), abs=1e-12), (n, c, k)


def test_pass_at_k_edges_and_large_n():
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert pass_at_k(5, 0, 5) == 0.0 and pass_at_k(5, 5, 1) == 1.0
    assert 0.0 < pass_at_k(1000, 1, 500) < 1.0  # no overflow from huge binomials
    for bad in [(3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*bad)


def test_default_ks():
    assert default_ks(1) == [1]
    assert default_ks(6) == [1, 2, 4]
    assert default_ks(16) == [1, 2, 4, 8, 16]


def test_majority_vote_clear_winner():
    assert majority_vote(["3", "4", "4"], [True, False, False]) == ("4", False)
    assert majority_vote(["3", "4", "3"], [True, False, True]) == ("3", True)


def test_majority_vote_tie_goes_to_the_earliest_answer():
    assert majority_vote(["4", "3", "3", "4"], [False, True, True, False]) == ("4", False)
    assert majority_vote(["3", "4", "4", "3"], [True, False, False, True]) == ("3", True)
    assert majority_vote(["7"], [True]) == ("7", True)  # k = 1: the first sample


def test_majority_vote_none_answers_abstain():
    assert majority_vote([None, None, "5"], [False, False, True]) == ("5", True)
    assert majority_vote([None, None], [False, False]) == (None, False)
    assert majority_vote([], []) == (None, False)
    assert majority_vote(["  ", None, "2"], [False, False, False]) == ("2", False)


def test_majority_vote_by_string_groups_cosmetic_variants_only():
    answers = ["\\dfrac{1}{2}", "0.5", " \\frac{1}{2} ", "0.5"]
    winner, correct = majority_vote(answers, [True, True, True, True])
    assert winner == "\\frac{1}{2}" and correct
    assert normalize_answer("\\left( 3, \\frac{\\pi}{2} \\right)") == "(3,\\frac{\\pi}{2})"
    assert normalize_answer("90^\\circ") == normalize_answer("90^{\\circ}") == "90"
    assert normalize_answer("\\text{(C)}.") == "(C)"


def test_majority_vote_correctness_is_the_winning_groups_first_sample():
    assert majority_vote(["2", "2", "1"], [True, False, False]) == ("2", True)


def _problem(level, subject, correct, extracted=None, tokens=10, finish="stop"):
    extracted = extracted or ["x"] * len(correct)
    return {"level": level, "subject": subject,
            "samples": [{"correct": c, "extracted": e, "num_tokens": tokens, "finish_reason": finish}
                        for c, e in zip(correct, extracted)]}


def test_compute_metrics_overall_and_breakdowns():
    problems = [_problem(1, "Algebra", [True, False], ["2", "3"]),
                _problem(1, "Geometry", [False, False], [None, None], tokens=20, finish="length"),
                _problem(2, "Algebra", [True, True], ["5", "5"])]
    m = compute_metrics(problems, [1, 2])
    overall = m["overall"]
    assert overall["problems"] == 3 and overall["samples"] == 6
    assert overall["pass@1"] == pytest.approx((0.5 + 0 + 1) / 3)
    assert overall["pass@2"] == pytest.approx(2 / 3)
    assert overall["maj@1"] == pytest.approx(2 / 3) and overall["maj@2"] == pytest.approx(2 / 3)
    assert overall["mean_response_tokens"] == pytest.approx(40 / 3)
    assert overall["truncated_share"] == pytest.approx(1 / 3)
    assert overall["no_answer_share"] == pytest.approx(1 / 3)
    assert list(m["by_level"]) == ["1", "2"]
    assert m["by_level"]["1"]["pass@1"] == pytest.approx(0.25)
    assert list(m["by_subject"]) == ["Algebra", "Geometry"]
    assert m["by_subject"]["Algebra"]["pass@2"] == 1.0
    with pytest.raises(ValueError):
        compute_metrics(problems, [4])


def test_majority_vote_with_an_equivalence():
    answers = ["1/3", "0.5", "\\frac13", "\\frac{1}{2}", "\\dfrac12"]
    correct = [False, True, False, True, True]
    assert majority_vote(answers, correct) == ("1/3", False)  # by string: five groups, the first wins the tie
    classes = [{"0.5", "\\frac{1}{2}", "\\frac12"}, {"1/3", "\\frac13"}]

    def same(first: str, other: str) -> bool:
        return first == other or any({first, other} <= c for c in classes)

    assert majority_vote(answers, correct, same) == ("0.5", True)


def _votes(answers, correct):
    return [_problem(1, "Algebra", correct, answers)]


def test_maj_at_k_groups_by_mathematical_equivalence():
    problems = _votes(["1/3", "0.5", "\\frac13", "\\frac{1}{2}", "\\dfrac12", "7"],
                      [False, True, False, True, True, False])
    by_string = compute_metrics(problems, [1, 4], grouping="string")
    assert by_string["maj_grouping"] == {"method": "string"} and by_string["overall"]["maj@4"] == 0.0
    by_value = compute_metrics(problems, [1, 4])
    assert by_value["overall"]["maj@4"] == 0.0  # of the first four: two thirds, two halves; the tie goes to 1/3
    assert compute_metrics(problems, [1, 6])["overall"]["maj@6"] == 1.0  # three halves
    grouping = by_value["maj_grouping"]
    assert grouping["method"] == "equivalence" and grouping["pairs"] == 6 and grouping["in_process"] == 6
    assert grouping["unresolved"] == 0 and grouping["timeouts"] == 0


def test_maj_at_k_equivalence_through_math_verify():
    answers = ["\\frac{\\sqrt{2}}{2}", "1", "\\frac{1}{\\sqrt{2}}", "1"]
    problems = _votes(answers, [True, False, True, False])
    result = compute_metrics(problems, [4])
    assert result["overall"]["maj@4"] == 1.0  # two equal halves of sqrt 2 beat two 1s: the tie goes to the first
    grouping = result["maj_grouping"]
    assert grouping["math_verify"] >= 1 and grouping["method"] == "equivalence" and grouping["seconds"] >= 0
    assert compute_metrics(problems, [4], grouping="string")["overall"]["maj@4"] == 0.0


def test_maj_at_k_grouping_is_bounded_in_time():
    problems = _votes(["\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"], [True, True])
    grouping = AnswerGrouping(problems, 2, timeout=1.0, budget_s=0.0)
    assert grouping.budget_ran_out and grouping.stats["unresolved"] == 1
    assert not grouping.same("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}")
    described = compute_metrics(problems, [2], budget_s=0.0)["maj_grouping"]
    assert described["method"].startswith("equivalence (partial: 1 pairs left")
    with pytest.raises(ValueError, match="grouping must be one of"):
        compute_metrics(problems, [2], grouping="exact")
    assert compute_metrics(problems, [1])["maj_grouping"]["method"].startswith("equivalence (k = 1")
