"""Answer extraction from a model's output, linear in the text length (prose extractors read a bounded tail).

Each extractor finds *candidates*: spans of the output with the answer's text and character offset.
:func:`find_answer` ranks them (see :class:`~alignrl.grading.config.GraderConfig` for the rules, with an example
of each) and says why the winner won; :func:`extract_answer` returns just the winning answer.

Explicit answer markers (:data:`MARKERS`): ``boxed`` (``\\boxed{..}``, ``\\fbox{..}``, ``\\boxed 5``),
``final_answer`` ("Final Answer: x", "The final answer is: x", a "**Final Answer**" heading over the answer; only
where it labels an answer, not "to reach the final answer, ..."), ``answer_heading`` (a ``# Answer`` line, then
the answer) and ``answer_is`` ("the answer is x", "Answer: x"). Fallbacks, tried in the configured order only when
no marker found anything: ``bare`` (the whole output when it is one short line with at most one word outside
``\\text{}``), ``last_sentence`` (the last math span, bold text or number of the last sentence that has one) and
``last_number`` (opt-in).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from alignrl.grading.config import GraderConfig
from alignrl.grading.spans import NUMBER, TEXT_CMD, WORD, brace_matches, expression_with_units, first_span, \
    last_sentence_value, next_line_span, one_value, prose_words

_BOX = re.compile(r"\\(?:boxed|fbox)\s*(\{)?")
_BOX_BARE = re.compile(r"[^\s${}\\]+|\\[a-zA-Z]+")  # `\boxed 5`, `\boxed \pi`
# "final answer" as a label: at a line start or in a heading, followed by "is", ":", "=" or " - " (or alone on its
# line); no two runs of blanks follow each other in the pattern, so it never backtracks quadratically
_FINAL = re.compile(
    r"^[ \t>#*_\-]*(?:\d{1,3}[.)][ \t>#*_\-]*)?(?:\\(?:textbf|text|section\*?)\{[ \t]*)?"
    r"(?:(?:so|thus|therefore|hence|and|then|my|our|the)\b[ \t,]*)*"
    r"final[ \t]+answer\b[ \t*_}]*(?P<sep>is\b[ \t]*:?|:|=|[-\u2013\u2014](?=[ \t])|$)[ \t*_}]*"
    r"(?:the final answer is\b[ \t]*:?[ \t]*)?", re.IGNORECASE | re.MULTILINE)
# "the answer is x" / "answer = x" in a sentence (not "if the answer is ..."), and "Answer: x" only as a label at a
# line start ("check our answer: 17*44 = 748" is no answer); two patterns, as one alternation scans far slower
_ANSWER_IS = re.compile(r"\banswer(?<!\bif the answer)(?<!\bif our answer)(?<!\bwhether the answer)"
                        r"(?<!\bwhether our answer)\s*(?:is|=)\s*:?\s*", re.IGNORECASE)
_ANSWER_LABEL = re.compile(r"^[ \t>#*_\-]*(?:\\textbf\{[ \t]*)?(?:(?:the|my|our|short|correct)[ \t]+)?"
                           r"answer[ \t*_}]*:[ \t*_}]*\s*", re.IGNORECASE | re.MULTILINE)
_HEADING = re.compile(r"^[ \t]*#+[ \t]*Answer[ \t]*:?[ \t]*$", re.IGNORECASE | re.MULTILINE)
_PER_EXTRACTOR = 8  # candidates kept per marker extractor (the last ones); bounds the work on adversarial input
#: The explicit answer markers, ranked by position; the other extractors are fallbacks.
MARKERS = ("boxed", "final_answer", "answer_heading", "answer_is")

Span = tuple[int, int]


def _boxed(text: str, start: int = 0) -> list[Span]:
    """Contents of the last complete ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces kept) and ``\\boxed x``,
    at most :data:`_PER_EXTRACTOR` of them, in text order."""
    if "\\boxed" not in text and "\\fbox" not in text:
        return []
    pairs: dict[int, int] | None = None
    found: list[Span] = []
    for m in reversed(list(_BOX.finditer(text, start))):
        if len(found) >= _PER_EXTRACTOR:
            break
        if m.group(1) is None:  # no brace: `\boxed 5`
            bare = _BOX_BARE.match(text, m.end())
            if bare:
                found.append(bare.span())
            continue
        if pairs is None:
            pairs = brace_matches(text)
        end = pairs.get(m.end() - 1)
        if end is not None and text[m.end():end].strip():
            found.append((m.end(), end))
    return found[::-1]


def _last_matches(pattern: re.Pattern, text: str, start: int = 0) -> list[re.Match]:
    kept: list[re.Match] = []
    for m in pattern.finditer(text, start):
        kept.append(m)
        if len(kept) > 2 * _PER_EXTRACTOR:
            del kept[:_PER_EXTRACTOR]
    return kept[-_PER_EXTRACTOR:]


def _rest_of_line_empty(text: str, pos: int) -> bool:
    newline = text.find("\n", pos, pos + 4000)
    return not text[pos:newline if newline >= 0 else pos + 4000].strip(" \t*_:}")


def _final_answer(text: str, start: int = 0) -> list[Span]:
    """"Final Answer: x", "The final answer is x", and a "Final Answer" heading over its answer."""
    spans = []
    for m in _last_matches(_FINAL, text, start):
        span = next_line_span(text, m.end()) if _rest_of_line_empty(text, m.end()) else first_span(text, m.end())
        if span:
            spans.append(span)
    return spans


def _answer_is(text: str, start: int = 0) -> list[Span]:
    """``the answer is x`` / ``Answer: x``."""
    ends = sorted({m.end() for pattern in (_ANSWER_IS, _ANSWER_LABEL) for m in _last_matches(pattern, text, start)})
    return [s for end in ends[-_PER_EXTRACTOR:] if (s := first_span(text, end))]


def _answer_heading(text: str, start: int = 0) -> list[Span]:
    """The first non-empty line after a ``# Answer`` heading (PRM800K style)."""
    return [s for m in _last_matches(_HEADING, text, start) if (s := next_line_span(text, m.end()))]


def _bare(text: str, start: int = 0) -> list[Span]:  # noqa: ARG001  (a fallback reads it all)
    """The whole text when it is a bare answer: one short line with at most one word outside ``\\text{}``."""
    core = text.strip()
    if not core or len(core) > 200 or "\n" in core or len(WORD.findall(TEXT_CMD.sub("", core))) > 1:
        return []
    start = text.find(core)
    return [(start, start + len(core))]


def _last_sentence(text: str, start: int = 0) -> list[Span]:  # noqa: ARG001  (a fallback reads it all)
    """Fallback for prose: the last math span, bold text or number of the last sentence that has one."""
    value = last_sentence_value(text)
    if value is None:
        return []
    start = max(text.rfind(value), 0)  # the offset is for --explain; the value is what counts
    return [(start, start + len(value))]


def _last_number(text: str, start: int = 0) -> list[Span]:  # noqa: ARG001  (a fallback reads it all)
    """The last number in the text (opt-in: it over-credits outputs that list many numbers)."""
    last = None
    for last in NUMBER.finditer(text):  # noqa: B007  (the last match is kept)
        pass
    return [last.span()] if last else []


#: name -> finder(text, start) of answer spans; a marker's finder may skip matches that begin before ``start``
EXTRACTORS: dict[str, Callable[[str, int], list[Span]]] = {
    "boxed": _boxed,
    "final_answer": _final_answer,
    "answer_heading": _answer_heading,
    "answer_is": _answer_is,
    "bare": _bare,
    "last_sentence": _last_sentence,
    "last_number": _last_number,
}
_TAIL_ONLY = {"answer_is", "last_sentence", "last_number", "final_answer", "bare"}


@dataclass(frozen=True)
class Candidate:
    """One answer an extractor found: ``text`` at ``offset`` (characters into the whole output).

    ``kind``: ``expression`` (no English words outside ``\\text{}``, e.g. ``48``, ``18 pi``, ``(C)``, or one with
    its unit words, ``18*pi square units``) or ``prose`` (``The train travels 120 miles``); ``value`` is what is
    graded when it differs from ``text``: the expression without its units, or a prose answer's one mathematical
    value (``120``), if any.
    """

    extractor: str
    offset: int
    text: str
    kind: str
    value: str | None = None

    @property
    def end(self) -> int:
        return self.offset + len(self.text)

    @property
    def answer(self) -> str:
        return self.value if self.value is not None else self.text

    @property
    def has_math(self) -> bool:
        return self.kind == "expression" or self.value is not None

    def to_dict(self) -> dict:
        return {"extractor": self.extractor, "offset": self.offset, "text": self.text[:300], "kind": self.kind,
                "value": self.value}


@dataclass(frozen=True)
class Extraction:
    """The answer :func:`find_answer` chose (``None``: none), the candidate it came from, all candidates, and why."""

    answer: str | None
    winner: Candidate | None
    candidates: tuple[Candidate, ...]
    why: str

    def to_dict(self) -> dict:
        return {"extractor": self.winner.extractor if self.winner else None,
                "offset": self.winner.offset if self.winner else None,
                "why": self.why, "candidates": [c.to_dict() for c in self.candidates]}


def after_separator(text: str, separators: tuple[str, ...]) -> str:
    """The text after the last occurrence of any separator (the whole text when none occurs)."""
    cut = -1
    for sep in separators:
        i = text.rfind(sep)
        if i >= 0:
            cut = max(cut, i + len(sep))
    return text if cut < 0 else text[cut:]


def _candidate(name: str, output: str, span: Span, prose_value: bool) -> Candidate | None:
    text = output[span[0]:span[1]]
    core = text.strip()
    if not core:
        return None
    offset = span[0] + text.find(core)
    if name == "boxed" or prose_words(core) == 0:
        return Candidate(name, offset, core, "expression")
    if not prose_value:
        return Candidate(name, offset, core, "prose")
    units = expression_with_units(core)  # "18*pi square units": an expression with its unit
    if units is not None:
        return Candidate(name, offset, core, "expression", units)
    return Candidate(name, offset, core, "prose", one_value(core))


def _check_names(names: tuple[str, ...]) -> None:
    unknown = [n for n in names if n not in EXTRACTORS]
    if unknown:
        raise ValueError(f"unknown extractor '{unknown[0]}'; known: {', '.join(EXTRACTORS)}")


def _candidates(output: str, names: tuple[str, ...], config: GraderConfig, after_last_box: bool = False
                ) -> list[Candidate]:
    """Every candidate of the extractors ``names`` (in ``names`` order), offsets into ``output``.

    ``after_last_box``: the other markers are looked for only after the last box (for the position rule, nothing
    before it can win), which saves scanning long outputs."""
    text = after_separator(output, config.separators)
    base = len(output) - len(text)
    tail_base = max(0, len(text) - config.tail_chars)
    if after_last_box and "boxed" in names:
        names = ("boxed", *(n for n in names if n != "boxed"))
    found, start = [], 0
    for name in names:
        offset = tail_base if name in _TAIL_ONLY else 0
        spans = EXTRACTORS[name](text[offset:], max(0, start - offset))
        if after_last_box and name == "boxed" and spans:
            start = spans[-1][1]
        for lo, hi in spans:
            cand = _candidate(name, output, (lo + offset + base, hi + offset + base), config.prose_value)
            if cand is not None:
                found.append(cand)
    return found


def _drop_enclosing(cands: list[Candidate]) -> list[Candidate]:
    """Without a candidate (other than a box) whose span holds another's (``answer is $\\boxed{5}$`` is the box),
    and without one inside a box (the box is the declared answer); of two with the same span the earlier-configured
    extractor stays."""
    kept = []
    for i, c in enumerate(cands):
        if c.extractor != "boxed":
            inner = any((d.offset, d.end) != (c.offset, c.end) and c.offset <= d.offset and d.end <= c.end
                        for d in cands)
            boxed = any(d.extractor == "boxed" and d.offset <= c.offset and c.end <= d.end for d in cands)
            if inner or boxed:
                continue
        if not any((d.offset, d.end) == (c.offset, c.end) for d in cands[:i]):
            kept.append(c)
    return kept


def _by_position(cands: list[Candidate], length: int, config: GraderConfig) -> tuple[Candidate, str]:
    ordered = sorted(cands, key=lambda c: (c.offset, c.end))
    mathy = [c for c in ordered if c.has_math]
    if not mathy:
        return ordered[-1], "the last explicit marker (no marker gave a mathematical value)"
    last = mathy[-1]
    why = "the last explicit marker"
    if last is not ordered[-1]:
        why = (f"the last explicit marker with a mathematical value (the later {ordered[-1].extractor} "
               f"'{ordered[-1].text[:60]}' has none)")
    if last.kind == "prose" and config.prefer_expression_chars > 0:
        near = [c for c in mathy if c.kind == "expression" and length - c.offset <= config.prefer_expression_chars]
        if near:
            return near[-1], (f"a clean expression within {config.prefer_expression_chars} chars of the end beats "
                              f"the later prose answer of {last.extractor}")
    return last, why


def find_answer(output: str, config: GraderConfig | None = None) -> Extraction:
    """The answer in ``output`` per ``config``, with every candidate and the reason the winner won."""
    config = config or GraderConfig()
    _check_names(config.extractors)
    if config.ranking == "order":
        cands = _candidates(output, config.extractors, config)
        for name in config.extractors:
            mine = [c for c in cands if c.extractor == name]
            if mine:
                winner = max(mine, key=lambda c: c.offset)
                return Extraction(winner.answer, winner, tuple(cands),
                                  f"the first extractor in the configured order that found an answer ({name})")
        return Extraction(None, None, tuple(cands), "no extractor found an answer")
    markers = tuple(n for n in config.extractors if n in MARKERS)
    explicit = _drop_enclosing(_candidates(output, markers, config, after_last_box=True))
    if explicit:
        winner, why = _by_position(explicit, len(output), config)
        return Extraction(winner.answer, winner, tuple(explicit), why)
    fallbacks = tuple(n for n in config.extractors if n not in MARKERS)
    cands = _candidates(output, fallbacks, config)
    for name in fallbacks:
        mine = [c for c in cands if c.extractor == name]
        if mine:
            return Extraction(mine[-1].answer, mine[-1], tuple(cands),
                              f"no explicit answer marker; the first fallback that found one ({name})")
    return Extraction(None, None, tuple(cands), "no explicit answer marker and no fallback found an answer")


def extract_answer(output: str, config: GraderConfig | None = None) -> str | None:
    """The answer in ``output`` per ``config`` (see :func:`find_answer`), or ``None``."""
    return find_answer(output, config).answer
