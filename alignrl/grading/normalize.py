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
    changed = True
    while changed:
        changed = False
        for left, right in _WRAPPERS:
            if len(s) >= len(left) + len(right) and s.startswith(left) and s.endswith(right):
                s = s[len(left):len(s) - len(right)].strip()
                changed = True
    return s


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
