"""A small, bounded evaluator for constant LaTeX answers (``4\\sqrt{2}``, ``\\frac{25}{2}\\pi``, ``(1, -3)``).

Used only to decide *wrong* in-process: when both answers evaluate and their value sets differ clearly, no
math-verify call is needed. Anything it does not fully understand (letters, ``e``, ``2^10``, mixed numbers
like ``3\\frac{1}{4}``, huge powers) makes :func:`evaluate` return ``None`` and the item goes to math-verify.
"""

from __future__ import annotations

import math
import re

_TOKEN = re.compile(r"\d+\.?\d*|\.\d+|\\[a-zA-Z]+|[-+*/^(){}\[\],]")
_MAX_LEN, _MAX_DEPTH, _MAX_ABS = 200, 40, 1e300
_MUL = {"*", "\\cdot", "\\times"}
_DIV = {"/", "\\div"}


class _Fail(Exception):
    pass


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.toks, self.i, self.depth = tokens, 0, 0

    def peek(self) -> str | None:
        return self.toks[self.i] if self.i < len(self.toks) else None

    def take(self, expected: str | None = None) -> str:
        tok = self.peek()
        if tok is None or (expected is not None and tok != expected):
            raise _Fail
        self.i += 1
        return tok

    def expr(self) -> float:
        self.depth += 1
        if self.depth > _MAX_DEPTH:
            raise _Fail
        value = self.term()
        while self.peek() in ("+", "-"):
            value = value + self.term() if self.take() == "+" else value - self.term()
        self.depth -= 1
        return _check(value)

    def term(self) -> float:
        value = self.unary()
        while True:
            tok = self.peek()
            if tok in _MUL or tok in _DIV:
                self.take()
                rhs = self.unary()
                if tok in _DIV:
                    if rhs == 0:
                        raise _Fail
                    value /= rhs
                else:
                    value *= rhs
            elif tok is not None and (tok in ("(", "{", "\\pi", "\\sqrt", "\\frac") or tok[0].isdigit()):
                if tok == "\\frac" and self.toks[self.i - 1][0].isdigit():
                    raise _Fail  # 3\frac{1}{4}: a mixed number, not a product
                value *= self.unary()  # implicit product: 4\sqrt{2}, 2\pi
            else:
                return _check(value)

    def unary(self) -> float:
        if self.peek() in ("-", "+"):
            return -self.unary() if self.take() == "-" else self.unary()
        return self.power()

    def power(self) -> float:
        base = self.atom()
        if self.peek() != "^":
            return base
        self.take()
        tok = self.peek()
        if tok is not None and tok[0].isdigit() and len(tok) > 1:
            raise _Fail  # `2^10` is ambiguous in LaTeX
        exp = self.atom()
        if abs(exp) > 64 or (base < 0 and exp != int(exp)) or (base == 0 and exp < 0):
            raise _Fail
        return _check(base ** exp)

    def atom(self) -> float:
        tok = self.take()
        if tok[0].isdigit() or tok[0] == ".":
            return float(tok)
        if tok == "\\pi":
            return math.pi
        if tok in ("(", "{"):
            value = self.expr()
            self.take(")" if tok == "(" else "}")
            return value
        if tok == "\\frac":
            num, den = self.group(), self.group()
            if den == 0:
                raise _Fail
            return num / den
        if tok == "\\sqrt":
            index = 2.0
            if self.peek() == "[":
                self.take()
                index = self.expr()
                self.take("]")
            radicand = self.group()
            if radicand < 0 or index < 1 or index != int(index):
                raise _Fail
            return radicand ** (1.0 / index)
        raise _Fail

    def group(self) -> float:
        if self.peek() == "{":
            return self.atom()
        tok = self.take()  # \frac12: single-character arguments
        if len(tok) == 1 and tok.isdigit():
            return float(tok)
        raise _Fail


def _check(value: float) -> float:
    if not math.isfinite(value) or abs(value) > _MAX_ABS:
        raise _Fail
    return value


def _split_top(tokens: list[str]) -> list[list[str]]:
    parts, depth, cur = [], 0, []
    for tok in tokens:
        depth += tok in "({[" and len(tok) == 1
        depth -= tok in ")}]" and len(tok) == 1
        if tok == "," and depth == 0:
            parts.append(cur)
            cur = []
        else:
            cur.append(tok)
    return parts + [cur]


def evaluate(s: str) -> list[float] | None:
    """The value(s) of a normalised constant answer (a comma list or tuple gives several), else ``None``."""
    if not s or len(s) > _MAX_LEN:
        return None
    tokens = _TOKEN.findall(s)
    if "".join(tokens) != s.replace(" ", ""):
        return None  # letters or symbols the evaluator does not know
    if len(tokens) > 2 and tokens[0] in "([" and tokens[-1] in ")]" and "," in tokens:
        inner = tokens[1:-1]
        if all(len(p) for p in _split_top(inner)) and len(_split_top(inner)) > 1:
            tokens = inner
    if any(tokens[i] == "," and len(tokens[i + 1]) == 3 and tokens[i + 1].isdigit()
           for i in range(len(tokens) - 1)):
        return None  # `1,000\pi`: a thousands separator or a list? let math-verify decide
    values = []
    try:
        for part in _split_top(tokens):
            parser = _Parser(part)
            values.append(parser.expr())
            if parser.peek() is not None:
                return None
    except (_Fail, OverflowError, ZeroDivisionError, ValueError, RecursionError):
        return None
    return values


_MATRIX = re.compile(r"^\\begin\{([pbv]?matrix)\}(.*)\\end\{\1\}$", re.DOTALL)


def evaluate_matrix(s: str) -> list[list[float]] | None:
    """Entries of a constant ``\\begin{pmatrix} .. \\end{pmatrix}`` (or ``bmatrix``), row by row, else ``None``."""
    m = _MATRIX.match(s) if len(s) <= 4 * _MAX_LEN else None
    if not m:
        return None
    rows = []
    for row in m.group(2).strip().rstrip("\\").split("\\\\"):
        entries = [evaluate(e.strip()) for e in row.split("&")]
        if any(e is None or len(e) != 1 for e in entries):
            return None
        rows.append([e[0] for e in entries])  # type: ignore[index]
    return rows


def matrices_differ(a: list[list[float]], b: list[list[float]], rel: float = 1e-4) -> bool:
    """True when two matrices of the same shape differ clearly in some entry (other shapes: False, undecided)."""
    if [len(r) for r in a] != [len(r) for r in b]:
        return False
    return any(clearly_different([x], [y], rel) for ra, rb in zip(a, b) for x, y in zip(ra, rb))


def clearly_different(a: list[float], b: list[float], rel: float = 1e-4) -> bool:
    """True when some value of one list is not close to any value of the other (as sets)."""
    def close(x: float, y: float) -> bool:
        return abs(x - y) <= rel * max(1.0, abs(x), abs(y))

    return any(not any(close(x, y) for y in b) for x in a) or any(not any(close(y, x) for x in a) for y in b)
