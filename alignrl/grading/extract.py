"""Answer extraction from a model's output: linear in the text length (prose extractors read a bounded tail).

Each extractor returns the answer's raw text (or ``None``); :func:`extract_answer` applies the separators and
tries the configured extractors in order.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from alignrl.grading.config import GraderConfig

_BRACE = re.compile(r"\\[{}]|[{}]")  # escaped \{ \} are literal braces, not groups
_BOX = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")
_BOX_BARE = re.compile(r"[^\s${}\\]+|\\[a-zA-Z]+")  # `\boxed 5`, `\boxed \pi`
_FINAL = re.compile(r"final answer\s*(?:is\s*)?[:\-]?\s*(?:the final answer is\s*:?\s*)?", re.IGNORECASE)
_ANSWER_IS = re.compile(r"\banswer\s*(?:is|:|=)\s*:?\s*", re.IGNORECASE)
_HEADING = re.compile(r"^[ \t]*#+[ \t]*Answer[ \t]*:?[ \t]*$", re.IGNORECASE | re.MULTILINE)
_MATH = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]|\*\*(.+?)\*\*", re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_SENTENCE_END = re.compile(r"(?<=[.!?;])\s+(?=\S)|\n")
_TUPLE = r"\(\s*-?\d+(?:\.\d+)?(?:\s*,\s*-?\d+(?:\.\d+)?)+\s*\)"  # (2, 3) written without math markup
_CANDIDATE = re.compile(r"\x00(\d+)\x00|" + _TUPLE + "|" + _NUMBER.pattern)
_VARIABLE = re.compile(r"^[a-zA-Z](?:'|_\{?\w+\}?|\([a-zA-Z]\))?$")
_NEGATION = re.compile(r"\bnot\b|n't\b|\bcannot\b", re.IGNORECASE)
_WORD = re.compile(r"(?<![\\a-zA-Z])[a-zA-Z]{2,}")  # an English word, not a \command
_TEXT_CMD = re.compile(r"\\(?:text|mbox|mathrm|textbf|operatorname|begin|end)\s*\{[^{}]*\}")
_HOPE = re.compile(r"I hope it is correct.*$", re.IGNORECASE | re.DOTALL)
_SPAN_MAX = 4000  # the most text an answer span is looked for in (answers are far shorter)


def _brace_matches(text: str) -> dict[int, int]:
    """Position of each ``{`` mapped to the position of its matching ``}`` (one pass, no recursion)."""
    stack: list[int] = []
    pairs: dict[int, int] = {}
    for m in _BRACE.finditer(text):
        c = m.group()
        if c == "{":
            stack.append(m.start())
        elif c == "}" and stack:
            pairs[stack.pop()] = m.start()
    return pairs


def extract_boxed(text: str) -> str | None:
    """Content of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces kept), or ``\\boxed x``."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return None
    pairs: dict[int, int] | None = None
    for m in reversed(list(_BOX.finditer(text))):
        if m.group(1) is None:  # no brace: `\boxed 5`
            bare = _BOX_BARE.match(text, m.end())
            if bare:
                return bare.group()
            continue
        if pairs is None:
            pairs = _brace_matches(text)
        end = pairs.get(m.end() - 1)
        if end is not None and text[m.end():end].strip():
            return text[m.end():end]
    return None


def _first_span(rest: str) -> str | None:
    """The answer at the start of ``rest``: a leading math span, else the text up to the sentence's end."""
    rest = rest[:_SPAN_MAX].lstrip(" \t:")
    m = _MATH.match(rest)
    if not m:  # "**Final Answer:** 5": the bold closes before the answer
        rest = rest.lstrip("* \t:")
        m = _MATH.match(rest)
    if m:
        return next(g for g in m.groups() if g is not None)
    line = rest.split("\n", 1)[0]
    line = _HOPE.sub("", line)
    line = re.split(r"\.(?:\s|$)", line, maxsplit=1)[0]  # "2.25. I hope" -> "2.25"
    line = line.strip().strip("*").rstrip(".,;").strip()
    return line or None


def _last(pattern: re.Pattern, text: str) -> re.Match | None:
    found = None
    for found in pattern.finditer(text):  # noqa: B007  (the last match is kept)
        pass
    return found


def extract_final_answer(text: str) -> str | None:
    """``Final Answer: The final answer is $x$. I hope it is correct.`` and ``Final answer: x``."""
    last = _last(_FINAL, text)
    return _first_span(text[last.end():]) if last else None


def extract_answer_is(text: str) -> str | None:
    """The last ``the answer is x`` / ``Answer: x``."""
    last = _last(_ANSWER_IS, text)
    return _first_span(text[last.end():]) if last else None


def extract_answer_heading(text: str) -> str | None:
    """The first non-empty line after the last ``# Answer`` heading (PRM800K style)."""
    last = _last(_HEADING, text)
    if last is None:
        return None
    for line in text[last.end():].split("\n"):
        if line.strip():
            return _first_span(line)
    return None


def _sentences(text: str) -> tuple[list[str], list[str]]:
    """Sentences of ``text`` with math/bold spans hidden as ``\\x00<i>\\x00`` (so they stay whole), and the spans."""
    spans: list[str] = []

    def hide(m: re.Match) -> str:
        spans.append(next(g for g in m.groups() if g is not None))
        return f"\x00{len(spans) - 1}\x00"

    return _SENTENCE_END.split(_MATH.sub(hide, text.replace("\x00", ""))), spans


def extract_last_sentence(text: str) -> str | None:
    """Fallback for prose: the last sentence holding a math span, bold text or a number gives its last one.

    Spans that are a bare variable (``n``, ``f(x)``) or a parenthesised aside are skipped; a negated sentence
    ("... is not a solution") gives no answer.
    """
    sentences, spans = _sentences(text)
    for sent in reversed(sentences):
        found = None
        for m in _CANDIDATE.finditer(sent):
            if m.group(1) is None:
                cand = m.group()
            elif sent[m.start() - 1:m.start()] == "(" and sent[m.end():m.end() + 1] == ")":
                continue  # an aside: "a non-zero derivative (\(-1\)) everywhere"
            else:
                cand = spans[int(m.group(1))].strip(" .,")
            if cand and not _VARIABLE.match(cand):
                found = cand
        if found is not None:
            return None if _NEGATION.search(sent) else found
    return None


def extract_bare(text: str) -> str | None:
    """The whole text when it is a bare answer: one short line with at most one word outside ``\\text{}``."""
    text = text.strip()
    if not text or len(text) > 200 or "\n" in text:
        return None
    return text if len(_WORD.findall(_TEXT_CMD.sub("", text))) <= 1 else None


def extract_last_number(text: str) -> str | None:
    """The last number in the text (opt-in: it over-credits outputs that list many numbers)."""
    nums = _NUMBER.findall(text)
    return nums[-1] if nums else None


EXTRACTORS: dict[str, Callable[[str], str | None]] = {
    "boxed": extract_boxed,
    "final_answer": extract_final_answer,
    "answer_heading": extract_answer_heading,
    "answer_is": extract_answer_is,
    "bare": extract_bare,
    "last_sentence": extract_last_sentence,
    "last_number": extract_last_number,
}
_TAIL_ONLY = {"answer_is", "last_sentence", "last_number", "final_answer", "bare"}


def after_separator(text: str, separators: tuple[str, ...]) -> str:
    """The text after the last occurrence of any separator (the whole text when none occurs)."""
    cut = -1
    for sep in separators:
        i = text.rfind(sep)
        if i >= 0:
            cut = max(cut, i + len(sep))
    return text if cut < 0 else text[cut:]


def extract_answer(output: str, config: GraderConfig | None = None) -> str | None:
    """The answer in ``output`` per ``config`` (extractors in order, first hit wins), or ``None``."""
    config = config or GraderConfig()
    text = after_separator(output, config.separators)
    tail = text[-config.tail_chars:]
    for name in config.extractors:
        try:
            fn = EXTRACTORS[name]
        except KeyError:
            raise ValueError(f"unknown extractor '{name}'; known: {', '.join(EXTRACTORS)}") from None
        found = fn(tail if name in _TAIL_ONLY else text)
        if found is not None and found.strip():
            return found.strip()
    return None
