"""The grader's settings (:class:`GraderConfig`) and result (:class:`Verdict`)."""

from __future__ import annotations

from dataclasses import dataclass

REASONS = ("correct", "wrong", "no_answer", "timeout", "unparsable")

#: Extractors tried in this order; the first that finds an answer wins (each takes its *last* occurrence).
#: The lenient default, for evaluation and ``alignrl grade``: also reads answers stated in prose.
DEFAULT_EXTRACTORS = ("boxed", "final_answer", "answer_heading", "answer_is", "bare", "last_sentence")
#: The strict chain the ``math`` training reward uses by default: only a boxed or explicitly marked final answer
#: counts, so a policy is never rewarded for an answer guessed from prose.
TRAINING_EXTRACTORS = ("boxed", "final_answer", "answer_heading")


@dataclass(frozen=True)
class GraderConfig:
    """How answers are extracted and compared.

    ``extractors`` names, in priority order: ``boxed`` (last ``\\boxed{}``/``\\fbox{}``/``\\boxed 5``),
    ``final_answer`` ("Final Answer: The final answer is $x$"), ``answer_heading`` (a ``# Answer`` line, then
    the answer), ``answer_is`` ("the answer is x"), ``bare`` (the whole output when it is one short line with
    at most one word outside ``\\text{}``, e.g. ``\\frac{1}{2}``), ``last_sentence`` (the last bold/math/number
    of the last sentence that has one: a fallback for answers stated in prose) and ``last_number`` (opt-in).
    When a ``separators`` string (e.g. ``</think>``) occurs, only the text after its last occurrence is judged.
    """

    extractors: tuple[str, ...] = DEFAULT_EXTRACTORS
    separators: tuple[str, ...] = ("</think>", "</thinking>", "<|end_of_thought|>")
    timeout: float = 5.0  # seconds per answer that needs math-verify (hard limit: the worker is killed)
    use_math_verify: bool = True  # False: only the in-process string/number checks
    float_rounding: int = 6  # passed to math_verify.verify
    strict: bool = True  # passed to math_verify.verify
    max_answer_chars: int = 1000  # longer extracted answers are "unparsable" without further work
    tail_chars: int = 2000  # prose extractors (answer_is, last_sentence, last_number) look at this many last chars

    def key(self) -> tuple:
        """What a cached result depends on (the extractors act before the cache)."""
        return (self.use_math_verify, self.float_rounding, self.strict)


@dataclass(frozen=True)
class Verdict:
    """The result of grading one output against one gold answer.

    ``reason`` is one of ``correct``, ``wrong``, ``no_answer``, ``timeout``, ``unparsable``; ``method`` says
    what decided it: ``exact`` (normalised strings equal), ``numeric``, ``math_verify``, ``none`` (nothing
    to compare), ``timeout`` or ``crash`` (the worker died on this item).
    """

    correct: bool
    extracted: str | None
    reason: str
    method: str = "none"

    def to_dict(self) -> dict:
        return {"correct": self.correct, "extracted": self.extracted, "reason": self.reason, "method": self.method}
