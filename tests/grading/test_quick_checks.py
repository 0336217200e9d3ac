"""The worker's speed-ups keep math-verify's verdicts: two-stage (SLL, then LL) parsing, and quick *wrong*
decisions by numeric evaluation (:mod:`alignrl.grading.quick_checks`)."""

from __future__ import annotations

import pytest

from alignrl.grading import mvworker
from alignrl.grading.quick_checks import plain_expr, quick_wrong, sets_differ, values_differ


@pytest.fixture(scope="module")
def mv():
    """math-verify's ``parse`` (of ``$\\boxed{..}$``, as the worker does) and ``verify``, loaded as in a worker."""
    mvworker._load()
    from math_verify import parse, verify

    def parsed(text: str) -> list:
        return parse(f"$\\boxed{{{text}}}$", parsing_timeout=None)

    def mv_verify(answer: str, gold: str) -> bool:
        return bool(verify(parsed(gold), parsed(answer), float_rounding=6, strict=True, timeout_seconds=None))

    return parsed, mv_verify


# (answer, gold) pairs from the grader dev set where math-verify took seconds to say "wrong" on a loaded machine
DEV_SLOW_WRONG = [
    ("2401x^4 - 18008x^3 + 285736x^2", "361"),
    ("\\frac{1}{2\\sin(21)\\sin(67.5)}", "14"),
    ("\\sqrt{BC^2 - AB^2}", "15"),
    ("\\sin 2^\\circ", "\\cos 58^\\circ"),
    ("\\frac{-\\sin^2 x\\cos^2 x}{1 - \\frac{5}{2}\\sin^2 x\\cos^2 x}", "\\frac{2}{3}"),
    ("x^{90} + x^{80} + x^{70} + x^{60} + x^{50} + x^{40} + x^{30} + x^{20} + x^{10} + 1", "1"),
    ("\\sqrt{\\left(\\frac{a+c}{2} + 6 - m\\right)^2 + \\left(\\frac{b+d}{2} + 8 - n\\right)^2}", "10"),
    ("\\frac{27 \\cdot \\ln(5)}{8 \\cdot \\ln(2)}", "\\frac{3}{2}"),
    ("21a^5 - 7a^4 - 16a^2 - 32a", "21a^5 - 7a^4 - 16a^2 + 32a"),
    ("8 \\tan^{-1}(2)", "6\\pi+2"),
    ("\\left(-\\infty, \\frac{1 - \\sqrt{17}}{2}\\right) \\cup \\left(\\frac{1 + \\sqrt{17}}{2}, \\infty\\right)",
     "(-\\infty, -2) \\cup (0, 1) \\cup (2, 4)"),
    ("(-\\infty, -8) \\cup (4, \\infty)", "(-\\infty,-8)\\cup (8,\\infty)"),
]
# Pairs the quick checks must leave to verify (whatever verify then says): identities, float rounding,
# percentages, undefined functions, relations, sets, intervals, matrices, equal strings.
LEFT_TO_VERIFY = [
    ("\\sin^2 x + \\cos^2 x", "1"),  # constant in truth: only simplify knows
    ("(x+1)^2", "x^2 + 2x + 1"),  # equal everywhere
    ("0.333333", "\\frac{1}{3}"),  # equal after math-verify's float rounding
    ("50", "50\\%"),  # a percentage
    ("f(x)", "-\\frac1{2x}"),  # an undefined function has no value
    ("k(x) = f(x)", "1"),
    ("x > 2", "(-\\infty, -2] \\cup [2, \\infty)"),  # a relation against a set
    ("[0, \\infty)", "(-\\infty,0]"),  # intervals
    ("-3 + c, -4 + c, c", "f(2) < f(1) < f(4)"),
    ("\\begin{pmatrix} -2/3 \\\\ -1/3 \\end{pmatrix}", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}"),  # matrices
    ("k", "-8"),  # a bare symbol: math-verify's own symbol rules
    ("\\int_0^1 x^2 dx", "\\frac{1}{3}"),  # integrals are not evaluated here
    ("[0, 1] \\cup [1, 2]", "[0, 2]"),  # the same set, written differently
    ("(-\\infty, 1) \\cup (1, \\infty)", "(-\\infty, 1) \\cup [1, \\infty)"),  # differ at an endpoint only
    ("(5, 6) \\cup (0, 1)", "(0, 1) \\cup (5, 6)"),
]


@pytest.mark.parametrize("answer,gold", DEV_SLOW_WRONG)
def test_quick_wrong_decides_what_verify_calls_wrong(mv, answer, gold):
    parsed, mv_verify = mv
    assert quick_wrong(parsed(gold), parsed(answer))
    assert mv_verify(answer, gold) is False  # math-verify agrees
    assert mvworker.verify_answer(answer, gold) == (False, "wrong")


@pytest.mark.parametrize("answer,gold", LEFT_TO_VERIFY)
def test_quick_wrong_leaves_the_rest_to_verify(mv, answer, gold):
    parsed, mv_verify = mv
    assert not quick_wrong(parsed(gold), parsed(answer))
    ok, _ = mvworker.verify_answer(answer, gold)
    assert ok is mv_verify(answer, gold)


EQUAL = [("(x+1)^2", "x^2 + 2x + 1"), ("\\sin^2 x + \\cos^2 x", "1"), ("0.333333", "\\frac{1}{3}"),
         ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}"), ("[0, 1] \\cup [1, 2]", "[0, 2]")]


@pytest.mark.parametrize("answer,gold", EQUAL)
def test_equal_answers_stay_correct(mv, answer, gold):
    assert mvworker.verify_answer(answer, gold) == (True, "correct")


def test_values_differ_rules(mv):
    parsed, _ = mv
    x_plus_i, two_plus_i = parsed("x + i")[0], parsed("2 + i")[0]
    assert values_differ(two_plus_i, x_plus_i)  # complex-mode symbols are sampled off the real line
    assert not values_differ(two_plus_i, x_plus_i, strict=False)  # non-strict verify renames variables
    assert not values_differ(parsed("2")[0], parsed("2.00001")[0])  # within the relative tolerance
    assert values_differ(parsed("2")[0], parsed("2.001")[0])
    assert not values_differ(parsed("2")[0], parsed("2.001")[0], float_rounding=2)  # verify rounds to 2 decimals
    assert not plain_expr(parsed("x = 1")[0]) and not plain_expr(parsed("(1, 2)")[0])
    assert not plain_expr(parsed("\\infty")[0])


def test_sets_differ_rules(mv):
    parsed, _ = mv
    assert sets_differ(parsed("(0, 1) \\cup (2, 3)")[0], parsed("(0, 3)")[0])
    assert not sets_differ(parsed("(0, 1)")[0], parsed("(0, 2)")[0])  # two intervals: verify's cheap comparison
    assert not sets_differ(parsed("(0, a) \\cup (2, 3)")[0], parsed("(0, 3)")[0])  # a free symbol
    assert not sets_differ(parsed("\\{1, 2\\} \\cup (2, 3)")[0], parsed("(0, 3)")[0])  # not only intervals


def test_string_pairs_follow_verify(mv):
    # verify also compares the parsed strings: equal strings are never declared wrong
    assert not quick_wrong(["1", "\\text{same}"], ["2", "\\text{same}"])
    assert quick_wrong(["\\text{a}"], ["\\text{b}"])


@pytest.mark.parametrize("text", ["\\left(-\\infty, \\frac{1 - \\sqrt{17}}{2}\\right) \\cup (4, \\infty)",
                                  "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "x^2 + y^2 = 25",
                                  "\\frac{-b \\pm \\sqrt{b^2 - 4ac}}{2a}", "3\\frac{1}{4}", "1,000", "2, 3",
                                  "f(2) < f(1) < f(4)", "\\text{(A)}", "25\\%", "\\sin 2^\\circ", "1011_2"])
def test_two_stage_parsing_gives_the_ll_parse(mv, text):
    from latex2sympy2_extended.latex2sympy2 import _Latex2Sympy, latex2sympy

    patched = _Latex2Sympy.create_parser
    assert patched.ll_create_parser.__qualname__ == "_Latex2Sympy.create_parser"
    fast = _outcome(latex2sympy, text)
    try:  # the library's own parser: full LL prediction
        _Latex2Sympy.create_parser = patched.ll_create_parser
        slow = _outcome(latex2sympy, text)
    finally:
        _Latex2Sympy.create_parser = patched
    assert fast == slow


def _outcome(convert, text: str) -> tuple:  # noqa: ANN001
    try:
        value = convert(text)
    except Exception as err:  # noqa: BLE001  (a syntax error must stay one)
        return ("error", str(err))
    return (type(value), str(value))
