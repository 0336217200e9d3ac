"""Answer markers ranked by position, "final answer" only as a label, sentences under a marker, plain-text math,
and what ``find_answer`` reports for ``--explain`` (no worker processes)."""

from __future__ import annotations

import time

import pytest

from alignrl.grading import GraderConfig, Verdict, extract_answer, prepare
from alignrl.grading.config import TRAINING_EXTRACTORS
from alignrl.grading.extract import MARKERS, find_answer
from alignrl.grading.grader import Pending, comparison_form
from alignrl.grading.normalize import normalize, plain_math
from alignrl.grading.spans import one_value

STRICT = GraderConfig(extractors=TRAINING_EXTRACTORS)


@pytest.mark.parametrize("output, expected", [  # the examples of GraderConfig's docstring, rule by rule
    ("Final Answer: 4\n\nWait, 6 times 8 is 48, not 4.\n\n(corrected) The answer is: 48.", "48"),  # 1
    ("The answer is 3. Then I recheck everything. \\boxed{4}", "4"),  # 1
    ("**Final Answer**\n\\[\n\\boxed{5}\n\\]", "5"),  # 2: a heading over its answer
    ("To reach the final answer, I still need to subtract 4: 9 - 4 = 5.\n\n# Answer\n\n5", "5"),  # 2
    ("# Answer\n\nThe train travels 120 miles.", "120"),  # 3
    ("**Final Answer:** 3 apples and 4 pears", "3 apples and 4 pears"),  # 3: several values stay as written
    ("\\boxed{3\\sqrt{2}}\n\nThe answer is: the side is about 4.24 units long.", "3\\sqrt{2}"),  # 4
    ("\\boxed{5}. " + "Checking each case again. " * 40 + "I checked that the answer is correct.", "5"),  # 5
    ("Final Answer: Friday", "Friday"),  # 5: no marker has a value, so the only one counts
    ("So the answer is $\\boxed{5}$.", "5"),  # 6
    ("\\boxed{\\text{the answer is 5}}", "\\text{the answer is 5}"),  # 6
    ("We add them and get 12 in the end.", "12"),  # 7: no marker, the last_sentence fallback
])
def test_documented_rules(output, expected):
    assert extract_answer(output) == expected


def test_last_marker_wins_whatever_its_type():
    text = "Final Answer: The area of the garden is 48 square meters.\n\nThe answer is: 48."
    assert extract_answer(text) == "48"
    assert extract_answer("\\boxed{12}\n\nHmm, I dropped a case; so the answer is 13.") == "13"
    assert extract_answer("# Answer\n\n7\n\nOn second thought, \\boxed{8}") == "8"


def test_an_expression_near_the_end_beats_a_later_sentence_but_not_a_far_one():
    near = "The answer is $\\frac{3}{8}$.\n\n**Final Answer:** the chance of two heads is about 0.38 here."
    assert extract_answer(near) == "\\frac{3}{8}"
    far = near.replace("\n\n**Final", "\n\n" + "More checking follows. " * 40 + "\n\n**Final")
    assert extract_answer(far) == "0.38"
    assert extract_answer(near, GraderConfig(prefer_expression_chars=0)) == "0.38"


@pytest.mark.parametrize("prose", [
    "Now I can state the final answer in a full sentence.",
    "To reach the final answer, I still need to subtract 4.",
    "Before the final answer, note that 2 + 2 = 4.",
    "We are close to the final answer of this long problem, 17 steps in.",
])
def test_final_answer_in_prose_is_no_marker(prose):
    assert extract_answer(f"{prose}\n\n# Answer\n\n9") == "9"
    assert find_answer(prose, STRICT).answer is None


@pytest.mark.parametrize("label, expected", [
    ("Final Answer: 7", "7"), ("final answer is 7", "7"), ("**Final Answer:** $7$", "7"),
    ("### Final Answer\n7", "7"), ("The final answer is: $\\boxed{7}$", "7"), ("Final answer = 7", "7"),
    ("So the final answer is 7.", "7"), ("\\textbf{Final Answer:} 7", "7"), ("Final Answer - 7 apples", "7"),
    ("Final Answer: The final answer is $7$. I hope it is correct.", "7"), ("**Final Answer**\n\n7", "7"),
])
def test_final_answer_labels(label, expected):
    assert find_answer(f"Some work.\n{label}", STRICT).answer == expected


@pytest.mark.parametrize("line, value", [
    ("The train travels 120 miles.", "120"), ("The area of the garden is $48$ square meters.", "48"),
    ("The least common multiple of 12 and 18 is 36.", "36"), ("The sum $\\sum_{k=1}^{3} k$ equals 6.", "6"),
    ("The car's average speed was 50 mph over the 3-hour trip.", "50"),
    ("The $y$-intercept of the line is $-2$.", "-2"), ("So there are **6** such numbers.", "6"),
    ("x = 5 and y = 3", None), ("The train travels 120 miles in 2 hours", None), ("It is not 5.", None),
    ("Nothing to see here", None),
])
def test_one_value_of_a_sentence(line, value):
    assert one_value(line) == value


@pytest.mark.parametrize("output, gold", [
    ("# Answer\n\nThe train travels 120 miles.", "120"),
    ("**Final Answer:** The garden has an area of 48 square meters.", "48"),
    ("The answer is: the probability is $\\frac{3}{8}$.", "\\frac{3}{8}"),
    ("**Answer:** 18*pi square units", "18\\pi"),
])
def test_a_sentence_under_a_marker_is_graded_by_its_value(output, gold):
    item = prepare(output, gold)
    assert isinstance(item, Pending) or item.correct, item


@pytest.mark.parametrize("plain, latex", [
    ("18*pi", "18 \\cdot \\pi"), ("sqrt(5)/3", "\\sqrt{5}/3"), ("4 pi", "4 \\pi"), ("x^2 + 1", "x^2 + 1"),
    ("x**2 + 1", "x^2 + 1"), ("2^10", "2^{10}"), ("x^(n+1)", "x^{n+1}"), ("sqrt(2*(3+1))", "\\sqrt{2 \\cdot (3+1)}"),
    ("(-inf, 3)", "(-\\infty , 3)"), ("2√3", "2\\sqrt3"), ("π/2", "\\pi /2"), ("pizza", "pizza"),
    ("\\frac{1}{2}", "\\frac{1}{2}"), ("\\text{pi}", "\\text{pi}"),
])
def test_plain_math_becomes_latex(plain, latex):
    assert plain_math(plain) == latex


@pytest.mark.parametrize("answer, gold, decided", [
    ("3/8", "\\frac{3}{8}", True), ("4 pi", "4\\pi", True), ("x**2+1", "x^2+1", True), ("18*pi", "9\\pi", False),
])
def test_plain_math_in_the_fast_paths(answer, gold, decided):
    verdict = prepare(f"The answer is {answer}", gold)
    assert isinstance(verdict, Verdict) and verdict.correct is decided, verdict


def test_plain_math_reaches_math_verify_as_latex():
    item = prepare("Final Answer: sqrt(5)/3", "\\frac{\\sqrt{5}}{3}")
    assert isinstance(item, Pending) and item.extracted == "sqrt(5)/3" and item.answer == "\\sqrt{5}/3"
    assert comparison_form("y = 18*pi", "18\\pi") == "18 \\cdot \\pi"


def test_equals_inside_a_subscript_is_not_an_equation():
    item = prepare("\\boxed{\\sum_{k=1}^{3} k}", "6")
    assert isinstance(item, Pending) and item.answer == "\\sum_{k=1}^{3} k"
    assert prepare("\\boxed{x_{n=1} = 5}", "5").correct  # the top-level `=` still splits
    assert prepare("\\boxed{f(x=1) = 4}", "4").correct
    assert prepare("\\boxed{x = 5, y = 6}", "5").answer == "x = 5, y = 6"  # two top-level `=`: kept whole


def test_huge_golds_take_linear_time():
    for gold, correct in [("$" * 1_000_000, False), ("$" * 500_000 + "5" + "$" * 500_000, False),
                          ("\\(" * 300_000 + "\\)" * 300_000, False), ("{" * 200_000 + "=" + "}" * 200_000, False),
                          (" " * 1_000_000 + "5", True), ("$" * 4_000 + "5" + "$" * 4_000, True)]:
        start = time.monotonic()
        verdict = prepare("\\boxed{5}", gold)
        assert time.monotonic() - start < 0.5, gold[:20]
        assert verdict.correct is correct
    start = time.monotonic()
    assert normalize("$" * 1_000_000) == ""  # the unwrapping itself is linear too
    assert normalize("$" * 1001 + "5" + "$" * 1002) == "5"
    assert time.monotonic() - start < 5.0
    assert normalize("$$ $\\frac{1}{2}$ $$") == "\\frac{1}{2}"


def test_training_extraction_uses_the_same_position_rule():
    assert find_answer("\\boxed{3}\n\nNo wait.\n\nFinal Answer: 5", STRICT).answer == "5"
    assert find_answer("Final Answer: 5\n\nLet me box it: \\boxed{6}", STRICT).answer == "6"
    assert find_answer("\\boxed{3}\n\nSo the answer is 5.", STRICT).answer == "3"  # answer_is is not accepted
    assert find_answer("The answer is 5.", STRICT).answer is None


def test_order_ranking_keeps_the_old_rule():
    text = "The answer is 3. \\boxed{4}"
    assert extract_answer(text, GraderConfig(extractors=("answer_is", "boxed"), ranking="order")) == "3"
    assert extract_answer(text, GraderConfig(extractors=("answer_is", "boxed"))) == "4"
    with pytest.raises(ValueError, match="ranking must be one of"):
        GraderConfig(ranking="last")


def test_find_answer_explains_its_choice():
    text = "<think>\\boxed{1}</think>Final Answer: The area is 46 square meters.\n\nOops: 6*8 = 48.\nThe answer is: 48."
    found = find_answer(text)
    assert found.answer == "48" and found.winner.extractor == "answer_is"
    assert text[found.winner.offset:found.winner.offset + 2] == "48"
    assert [c.extractor for c in found.candidates] == ["final_answer", "answer_is"]  # the boxed one is in <think>
    sentence = found.candidates[0]
    assert (sentence.kind, sentence.value, sentence.text) == ("prose", "46", "The area is 46 square meters")
    assert found.why == "the last explicit marker"
    explained = found.to_dict()
    assert explained["extractor"] == "answer_is" and explained["offset"] == found.winner.offset
    assert len(explained["candidates"]) == 2
    assert "no explicit answer marker" in find_answer("We get 12 in the end.").why
    assert find_answer("nothing here at all").to_dict()["extractor"] is None
    assert set(MARKERS) == {"boxed", "final_answer", "answer_heading", "answer_is"}


def test_a_marker_with_no_value_does_not_beat_one_with_a_value():
    found = find_answer("\\boxed{5}\n\n" + "Let me double check. " * 40 + "The answer is correct.")
    assert found.answer == "5" and "has none" in found.why
