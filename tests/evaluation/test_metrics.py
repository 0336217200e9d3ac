"""pass@k against brute-force enumeration, maj@k on hand cases, metric breakdowns."""

from __future__ import annotations

import itertools

import pytest

from alignrl.evaluation.metrics import compute_metrics, default_ks, majority_vote, normalize_answer, pass_at_k


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


def test_majority_vote_groups_cosmetic_variants():
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
