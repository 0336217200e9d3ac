"""Extraction, normalisation and the in-process fast paths (no worker processes)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from alignrl.grading import GraderConfig, Verdict, as_number, extract_answer, normalize, prepare
from alignrl.grading.grader import Pending
from alignrl.grading.numeric import clearly_different, evaluate


@pytest.mark.parametrize("output, expected", [
    ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
    ("\\boxed{\\frac{\\sqrt{3}}{2}} then \\boxed{\\left(1, \\frac{2}{3}\\right)}", "\\left(1, \\frac{2}{3}\\right)"),
    ("first \\boxed{1} then \\fbox{2}", "2"),
    ("the answer is $\\boxed 5$", "5"),
    ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),  # escaped braces are not groups
    ("\\boxed{3} then a truncated \\boxed{4", "3"),
    ("Final Answer: The final answer is $(2, 3\\sqrt{5})$. I hope it is correct.", "(2, 3\\sqrt{5})"),
    ("Final Answer: The final answer is 2.25. I hope it is correct.", "2.25"),
    ("blah\nFinal answer: 42", "42"),
    ("work\n\n# Answer\n\n\\frac{3}{4}\n", "\\frac{3}{4}"),
    ("So the answer is 7.", "7"), ("The answer is **12**.", "12"), ("**Final Answer:** 5", "5"),
    ("Therefore, the answer is: $x = -3$.", "x = -3"),
    ("\\frac{5}{9}", "\\frac{5}{9}"),
    ("\\text{Evelyn}", "\\text{Evelyn}"),
    ("Thus, Lara read 128 pages on the first day.", "128"),
    ("Therefore, the area is \\(\\frac{8\\pi}{5}\\) square units.", "\\frac{8\\pi}{5}"),
    ("the remainder is **0**. To summarize, we are done.", "0"),
    ("so the degree of \\((x^2+1)(x+3)\\) is 3.", "3"),
    ("a total of \\(2 + 1 = 3\\) values for \\(n\\).", "2 + 1 = 3"),
    ("So, x = 14 and y = 15 is not a solution.", None),
    ("<think>maybe \\boxed{1}</think>The answer is \\boxed{2}", "2"),
    ("<think>\\boxed{1}</think> I am not sure.", None),
    ("", None),
    ("I don't know", None),
])
def test_extract_answer(output, expected):
    assert extract_answer(output) == expected


def test_extractors_are_configurable():
    text = "The answer is 3. \\boxed{4}"
    assert extract_answer(text, GraderConfig(extractors=("answer_is", "boxed"), ranking="order")) == "3"
    assert extract_answer(text, GraderConfig(extractors=("answer_is",))) == "3"
    assert extract_answer("we get 1, 2 and 3 things", GraderConfig(extractors=("last_number",))) == "3"
    assert extract_answer("x</answer>\\boxed{5}", GraderConfig(separators=("</answer>",))) == "5"
    with pytest.raises(ValueError, match="unknown extractor"):
        extract_answer("x", GraderConfig(extractors=("nope",)))


def test_nested_braces_and_deep_input_are_linear():
    deep = "\\boxed{" + "{" * 10_000 + "1" + "}" * 10_000 + "}"
    assert extract_answer(deep) == "{" * 10_000 + "1" + "}" * 10_000


@pytest.mark.parametrize("raw, expected", [
    ("$\\dfrac{1}{2}$", "\\frac{1}{2}"), ("\\left( 1, 2 \\right)", "(1,2)"), ("30^\\circ", "30"),
    ("10\\;\\text{edges}", "10"), ("5\\text{ cm}^2", "5"), ("\\$18.90", "18.90"), ("50\\%", "50"),
    ("\\text{(A)}", "(A)"), ("1,000", "1000"), ("10{,}000", "10000"), ("x = 5", "5"), ("\\frac12", "\\frac{1}{2}"),
    ("\\frac1{10}", "\\frac{1}{10}"), ("\\sqrt2", "\\sqrt{2}"), ("12.", "12"), (".5", "0.5"), ("\\!4", "4"),
    ("\\pi r^2", "\\pi r^2"), ("108 meters", "108"),
])
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize("text, value", [
    ("12", 12), ("-0.5", -0.5), ("3/4", 0.75), ("\\frac{3}{4}", 0.75), ("-\\frac{3}{4}", -0.75),
    ("2\\frac{1}{2}", 2.5), ("x", None), ("\\frac{1}{0}", None), ("9" * 100, None), ("1e5", None),
])
def test_as_number(text, value):
    assert as_number(text) == value


def test_numeric_evaluator():
    assert evaluate("4\\sqrt{2}") == pytest.approx([5.656854249])
    assert evaluate("(1,-3)") == [1.0, -3.0]
    for bad in ("x+1", "3\\frac{1}{4}", "2^10", "9^{9^{9^{9}}}", "\\frac{1}{0}", "{" * 300, "1,000\\pi", "e"):
        assert evaluate(bad) is None, bad
    assert clearly_different([1.0, 2.0], [2.0, 1.5])
    assert not clearly_different([1.0, 2.0], [2.0, 1.0])


@pytest.mark.parametrize("output, gold, correct, method", [
    ("\\boxed{7}", "7", True, "exact"), ("\\boxed{0.5}", "\\frac{1}{2}", True, "numeric"),
    ("\\boxed{8}", "7", False, "numeric"), ("\\boxed{2\\sqrt{2}}", "\\sqrt{7}", False, "numeric"),
    ("\\boxed{x=5}", "5", True, "exact"), ("\\boxed{0.2}", "20\\%", True, "numeric"),
    ("\\boxed{30^\\circ}", "30", True, "exact"), ("\\boxed{10,\\!080}", "10080", True, "exact"),
    ("Final Answer: there are many answers", "5", False, "exact"), ("\\boxed{2000}", "20\\%", False, "numeric"),
    ("\\boxed{Sunday}", "\\text{Friday}", False, "exact"), ("\\boxed{friday}", "\\text{Friday}", True, "exact"),
    ("\\boxed{C}", "\\text{(C)}", True, "exact"),
    ("\\boxed{\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}}", "\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}", False, "numeric"),
])
def test_fast_paths_decide_in_process(output, gold, correct, method):
    verdict = prepare(output, gold)
    assert isinstance(verdict, Verdict) and (verdict.correct, verdict.method) == (correct, method)


def test_same_letters_in_another_order_are_left_to_math_verify():
    assert isinstance(prepare("\\boxed{D, A}", "\\text{A,D}"), Pending)


def test_undecided_items_are_pending():
    item = prepare("\\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{1}{\\sqrt{2}}")
    assert isinstance(item, Pending) and item.answer == "\\frac{\\sqrt{2}}{2}"
    assert prepare("I have no idea.", "1") == Verdict(False, None, "no_answer", "none")
    long = prepare("\\boxed{" + "1+" * 1000 + "1}", "2")
    assert long.reason == "unparsable" and len(long.extracted) == GraderConfig().max_answer_chars


def test_grader_imports_no_torch():
    code = "import sys, alignrl.grading, alignrl.rewards.math; sys.exit(any(m in sys.modules for m in " \
           "('torch', 'transformers', 'math_verify', 'sympy')))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
