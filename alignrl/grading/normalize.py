"""String normalisation of answers (MATH conventions) and exact parsing of plain numbers.

Two answers whose :func:`normalize` forms are equal are graded correct without math-verify; two plain numbers
(:func:`as_number`) are compared exactly as fractions. Everything here is linear-time and never recurses.
"""

from __future__ import annotations

import re
from fractions import Fraction

_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"), ("**", "**"))
_UNIT_TEXT = re.compile(r"^(.*?[\d}).])\s*\\(?:text|mbox|mathrm)\s*\{\s*[a-zA-Z][a-zA-Z .\-^]*\}(\^\{?\d\}?)?$")
_TEXT = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm|mathbf|operatorname)\s*\{([^{}]*)\}")
_TRAILING_WORDS = re.compile(r"^(-?[\d.,/]+)\s*([a-zA-Z][a-zA-Z. ]*)$")  # "108 meters": words checked in code
_SPACING = re.compile(r"(?<!\\)\\[!,;: ]|\\q?quad|\\displaystyle|\\(?:left|right|big|Big|bigg|Bigg)[lr]?(?![a-zA-Z])")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree|\^\s*\{\s*\\text\{\s*o\s*\}\s*\}")
_FRAC_SHORT = re.compile(r"\\frac\s*(\d|\\?[a-zA-Z])\s*(\d|\\?[a-zA-Z])")
_FRAC_HALF = re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d|[a-zA-Z])")
_FRAC_HALF2 = re.compile(r"\\frac\s*(\d|[a-zA-Z])\s*\{")
_SQRT_SHORT = re.compile(r"\\sqrt\s*(\d+|[a-zA-Z])")
_CMD_SPACE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")
_SHORT_LHS = re.compile(r"^[a-zA-Z](?:_\{?\w\}?)?(?:\([a-zA-Z]\))?\s*=\s*(?!=)")
_INT_OR_DEC = re.compile(r"^[+-]?(?:\d{1,60}(?:\.\d{0,60})?|\.\d{1,60})$")
_SLASH = re.compile(r"^([+-]?\d{1,60})/(\d{1,60})$")
_FRAC_NUM = re.compile(r"^([+-]?)(\d{1,60})?\\frac\{([+-]?\d{1,60})\}\{(\d{1,60})\}$")


def _unwrap(s: str) -> str:
    """``s`` without enclosing ``$..$``, ``\\(..\\)``, ``**..**`` etc., however deeply nested: one pass of index
    moves, so a million ``$`` take linear time."""
    lo, hi = 0, len(s)
    changed = True
    while changed:
        changed = False
        while lo < hi and s[lo].isspace():
            lo += 1
        while hi > lo and s[hi - 1].isspace():
            hi -= 1
        for left, right in _WRAPPERS:
            if hi - lo >= len(left) + len(right) and s.startswith(left, lo, hi) and s.endswith(right, lo, hi):
                lo, hi = lo + len(left), hi - len(right)
                changed = True
    return s[lo:hi]


def normalize(ans: str) -> str:
    """A canonical string for ``ans``: wrappers, spacing, units, degrees, ``dfrac`` etc. removed."""
    s = _unwrap(ans.strip())
    s = s.replace("\n", " ").replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _SPACING.sub("", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = s.replace("\\displaystyle", "").replace("\\mathop", "")
    s = s.strip().rstrip(".").strip()
    s = _UNIT_TEXT.sub(r"\1", s)
    s = _TEXT.sub(r"\1", s)
    m = _TRAILING_WORDS.match(s)
    if m and 1 <= len(words := m.group(2).replace(".", " ").split()) <= 3 and all(len(w) >= 2 for w in words):
        s = m.group(1)
    s = _SHORT_LHS.sub("", s) if s.count("=") == 1 else s
    s = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_HALF2.sub(r"\\frac{\1}{", s)
    s = _SQRT_SHORT.sub(r"\\sqrt{\1}", s)
    s = "".join(_CMD_SPACE.sub("\\1\x01", s).split()).replace("\x01", " ")  # keep `\pi r`, drop other spaces
    s = s.rstrip(".").replace("{,}", ",")
    if _THOUSANDS.match(s):
        s = s.replace(",", "")
    if s.startswith("."):
        s = "0" + s
    if s.startswith("-."):
        s = "-0" + s[1:]
    return s


def as_number(s: str) -> Fraction | None:
    """The exact value of a plain number (``12``, ``-0.5``, ``3/4``, ``\\frac{3}{4}``, ``2\\frac{1}{2}``), else None."""
    try:
        if _INT_OR_DEC.match(s):
            return Fraction(s)
        m = _SLASH.match(s)
        if m and int(m.group(2)) != 0:
            return Fraction(int(m.group(1)), int(m.group(2)))
        m = _FRAC_NUM.match(s)  # also a mixed number: 3\frac{1}{4} = 13/4
        if m and int(m.group(4)) != 0 and not (m.group(2) and m.group(3).startswith(("-", "+"))):
            value = int(m.group(2) or 0) + Fraction(int(m.group(3)), int(m.group(4)))
            return -value if m.group(1) == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


_UNICODE_MATH = {"π": "\\pi ", "√": "\\sqrt", "∞": "\\infty ", "×": "\\times ", "·": "\\cdot ", "⋅": "\\cdot ",
                 "−": "-", "÷": "\\div ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne "}
_POWER_STARS = re.compile(r"(?<=[\w)])\s*\*\*\s*(?=[\w(-])")  # x**2 (Python's power)
_STAR = re.compile(r"(?<=[\w).}\]])\s*\*\s*(?=[\w(\\{.])")  # 18*pi, 2*(x+1): a product, never `^*` or `**`
_PLAIN_WORD = re.compile(r"(?<![\\a-zA-Z])(sqrt|pi|infinity|infty|inf|arcsin|arccos|arctan|sin|cos|tan|cot|sec|"
                         r"csc|log|ln|exp)(?![a-zA-Z])")
_PLAIN_NAMES = {"infinity": "infty", "inf": "infty"}
_OPENERS = re.compile(r"\\sqrt\s*\(|\^\s*\(|\(|\)")
_LONG_POWER = re.compile(r"\^(\d{2,})")
_PLAIN_HINT = re.compile(r"[*π√∞×·⋅−÷≤≥≠]|\^\s*\(|\^\d\d|"
                         r"(?<![\\a-zA-Z])(?:sqrt|pi|inf|infinity|sin|cos|tan|log|ln|exp)"
                         r"(?![a-zA-Z])")


def _braces_for_parens(s: str) -> str:
    """``\\sqrt(5)`` -> ``\\sqrt{5}`` and ``x^(n+1)`` -> ``x^{n+1}`` (matching parentheses; one pass)."""
    out, stack, pos = [], [], 0
    for m in _OPENERS.finditer(s):
        out.append(s[pos:m.start()])
        tok = m.group()
        if tok == ")":
            out.append("}" if stack and stack.pop() else ")")
        elif tok == "(":
            stack.append(False)
            out.append("(")
        else:  # `\sqrt(` or `^(`
            stack.append(True)
            out.append(tok[:-1].rstrip() + "{")
        pos = m.end()
    out.append(s[pos:])
    return "".join(out)


def plain_math(ans: str) -> str:
    """Plain-text math written as LaTeX, for the comparisons: ``18*pi`` -> ``18 \\cdot \\pi``, ``sqrt(5)/3`` ->
    ``\\sqrt{5}/3``, ``4 pi`` -> ``4 \\pi``, ``x**2`` / ``x^(2)`` -> ``x^2`` / ``x^{2}``, ``2^10`` -> ``2^{10}``,
    ``π``/``√``/``∞`` -> ``\\pi``/``\\sqrt``/``\\infty``. LaTeX is left as it is (only a ``*`` product becomes
    ``\\cdot``); words are converted only in answers with no LaTeX command. Linear in the length."""
    if len(ans) > 2000 or not _PLAIN_HINT.search(ans):
        return ans
    plain = "\\" not in ans
    s = "".join(_UNICODE_MATH.get(c, c) for c in ans) if not ans.isascii() else ans
    if plain:
        s = _POWER_STARS.sub("^", s)
    s = _STAR.sub(" \\\\cdot ", s)
    if plain:
        s = _PLAIN_WORD.sub(lambda m: "\\" + _PLAIN_NAMES.get(m.group(1), m.group(1)) + " ", s)
        s = _LONG_POWER.sub(r"^{\1}", s)
    if "(" in s and ("\\sqrt" in s or "^" in s):
        s = _braces_for_parens(s)
    return " ".join(s.split())
