"""Text-level helpers of answer extraction: brace matching, the answer span after a marker, and the one
mathematical value of a sentence. Everything here is linear in its input and never recurses."""

from __future__ import annotations

import re

BRACE = re.compile(r"\\[{}]|[{}]")  # escaped \{ \} are literal braces, not groups
MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]|\*\*(?!\s)(.+?)\*\*",  # "** x" is no bold
                  re.DOTALL)
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=\S)|\n")
_TUPLE = r"\(\s*-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?)+\s*\)"  # (2, 3) written without math markup
_CANDIDATE = re.compile(r"\x00(\d+)\x00|" + _TUPLE + "|" + NUMBER.pattern)
_VARIABLE = re.compile(r"^[a-zA-Z](?:'|_\{?\w+\}?|\([a-zA-Z]\))?$")
_NEGATION = re.compile(r"\bnot\b|n't\b|\bcannot\b", re.IGNORECASE)
WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")  # an English word, not a \command
TEXT_CMD = re.compile(r"\\(?:text|mbox|mathrm|textbf|operatorname|begin|end)\s*\{[^{}]*\}")
#: words that are mathematics in plain-text answers (``4 pi``, ``sqrt(5)/3``), not prose
MATH_WORDS = frozenset("pi sqrt sin cos tan cot sec csc arcsin arccos arctan log ln exp inf infty infinity "
                       "mod gcd lcm max min deg".split())
_MODIFIER = re.compile(r"-[a-zA-Z]|(?:st|nd|rd|th)\b")
_UNIT_WORD = re.compile(r"^[a-zA-Z]{2,}$")
_COPULA = re.compile(r"\b(?:is|are|was|were|equals?|becomes|gives)\b|=", re.IGNORECASE)
_SHORT_WORDS = frozenset("is of to in on at be or as an by it we so if no do up us my he".split())
_HOPE = re.compile(r"I hope it is correct.*$", re.IGNORECASE | re.DOTALL)
SPAN_MAX = 4000  # the most text an answer span is looked for in (answers are far shorter)


def brace_matches(text: str) -> dict[int, int]:
    """Position of each ``{`` mapped to the position of its matching ``}`` (one pass, no recursion)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for m in BRACE.finditer(text):
        if m.group() == "{":
            stack.append(m.start())
        elif m.group() == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def _group(m: re.Match) -> int:
    return next(i for i, g in enumerate(m.groups(), 1) if g is not None)


def first_span(text: str, pos: int) -> tuple[int, int] | None:
    """``(start, end)`` in ``text`` of the answer that starts at ``pos``: a leading math or bold span's content,
    else the rest of the line up to its first sentence end (``2.25. I hope ...`` gives ``2.25``)."""
    chunk = text[pos:pos + SPAN_MAX]
    lead = len(chunk) - len(chunk.lstrip(" \t:"))
    m = MATH.match(chunk, lead)
    if not m:  # "**Final Answer:** 5": the bold closes before the answer
        lead = len(chunk) - len(chunk.lstrip("* \t:"))
        m = MATH.match(chunk, lead)
    if m:
        g = _group(m)
        return pos + m.start(g), pos + m.end(g)
    line = chunk[lead:].split("\n", 1)[0]
    line = _HOPE.sub("", line)
    line = re.split(r"\.(?:\s|$)", line, maxsplit=1)[0]
    core = line.strip().strip("*").rstrip(".,;").strip()
    if not core:
        return None
    start = pos + lead + line.find(core)
    return start, start + len(core)


def next_line_span(text: str, pos: int) -> tuple[int, int] | None:
    """The answer on the first non-empty line at or after ``pos`` (for headings: ``# Answer``, ``**Final Answer**``);
    a display-math block that starts there (``\\[ ... \\]`` over several lines) is taken whole."""
    end = min(len(text), pos + SPAN_MAX)
    while pos < end:
        newline = text.find("\n", pos, end)
        stop = end if newline < 0 else newline
        if text[pos:stop].strip():
            start = pos + len(text[pos:stop]) - len(text[pos:stop].lstrip())
            return first_span(text, start)
        if newline < 0:
            return None
        pos = newline + 1
    return None


def prose_words(s: str) -> int:
    """English words in ``s`` outside ``\\text{}``-like groups: not math words (``pi``, ``sqrt``), not names of
    points or variables (``AC``, ``ab``, the ``xy`` of ``2xy``); two-letter words only when common (``is``, ``or``)."""
    count = 0
    for m in WORD.finditer(TEXT_CMD.sub("", s)):
        w = m.group()
        if w.isupper() or w.lower() in MATH_WORDS or m.string[m.start() - 1:m.start()].isdigit():
            continue
        count += len(w) > 2 or w.lower() in _SHORT_WORDS
    return count


def hide_math(text: str) -> tuple[str, list[str]]:
    """``text`` with math/bold spans replaced by ``\\x00<i>\\x00`` (so they stay whole), and the spans."""
    spans: list[str] = []

    def hide(m: re.Match) -> str:
        spans.append(m.group(_group(m)))
        return f"\x00{len(spans) - 1}\x00"

    return MATH.sub(hide, text.replace("\x00", "")), spans


def sentence_values(sent: str, spans: list[str]) -> tuple[list[str], list[str]] | None:
    """Math/bold spans and plain numbers of one sentence (hidden form), in order; ``None`` if it is negated.

    Spans that are a bare variable (``n``, ``f(x)``) or a parenthesised aside are skipped."""
    found_spans, numbers = [], []
    for m in _CANDIDATE.finditer(sent):
        value = _value(m, sent, spans)
        if value is not None:
            (numbers if m.group(1) is None else found_spans).append(value)
    if (found_spans or numbers) and _NEGATION.search(sent):
        return None
    return found_spans, numbers


def last_sentence_value(text: str) -> str | None:
    """The last math span, bold text or number of the last sentence that has one (``None`` if it is negated)."""
    hidden, spans = hide_math(text)
    for sent in reversed(_SENTENCE_END.split(hidden)):
        values = sentence_values(sent, spans)
        if values is None:
            return None
        if values[0] or values[1]:
            return _last_in_order(sent, spans)
    return None


def _last_in_order(sent: str, spans: list[str]) -> str | None:
    """The last value of a sentence in text order, spans and numbers mixed (as :func:`sentence_values`)."""
    found = None
    for m in _CANDIDATE.finditer(sent):
        found = _value(m, sent, spans) or found
    return found


def one_value(line: str) -> str | None:
    """The one mathematical value of a sentence (``The train travels 120 miles.`` -> ``120``), else ``None``.

    Its math/bold spans and plain numbers count; with several different values, those after its verb of being
    (``is``, ``equals``, ``=``) count when it has just one (``The LCM of 12 and 18 is 36`` -> ``36``, but
    ``x = 5 and y = 3`` has none). A negated sentence has none."""
    hidden, spans = hide_math(line)
    if sentence_values(hidden, spans) is None:
        return None
    found = _single(hidden, spans)
    copulas = list(_COPULA.finditer(hidden, 0, SPAN_MAX))
    if found is None and len(copulas) == 1:
        found = _single(hidden[copulas[0].end():], spans)
    return found


def expression_with_units(s: str) -> str | None:
    """The expression of ``18*pi square units`` / ``120 miles`` (an expression with a digit, then one to three plain
    words), else ``None``."""
    tokens = s.rstrip(".").split()
    words = 0
    while words < min(3, len(tokens) - 1) and _UNIT_WORD.match(tokens[-1 - words]) \
            and tokens[-1 - words].lower() not in MATH_WORDS:
        words += 1
    head = " ".join(tokens[:len(tokens) - words])
    if not words or prose_words(head) or not any(c.isdigit() for c in head):
        return None
    return head


def _single(sent: str, spans: list[str]) -> str | None:
    values = sentence_values(sent, spans)
    found = [] if values is None else [v for m in _CANDIDATE.finditer(sent) if (v := _value(m, sent, spans))]
    distinct = {v.replace(" ", "") for v in found}
    return found[-1] if len(distinct) == 1 else None


def _value(m: re.Match, sent: str, spans: list[str]) -> str | None:
    """The value a :data:`_CANDIDATE` match stands for (``None``: a variable or a parenthesised aside)."""
    if m.group(1) is None:  # a plain number, unless it is part of a word: "3-hour trip", "the 2nd term"
        return None if _MODIFIER.match(sent, m.end()) else m.group()
    if sent[m.start() - 1:m.start()] == "(" and sent[m.end():m.end() + 1] == ")":
        return None
    cand = spans[int(m.group(1))].strip(" .,")
    return cand if cand and not _VARIABLE.match(cand) else None
