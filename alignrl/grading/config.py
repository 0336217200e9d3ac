"""The grader's settings (:class:`GraderConfig`) and result (:class:`Verdict`)."""

from __future__ import annotations

from dataclasses import dataclass

REASONS = ("correct", "wrong", "no_answer", "timeout", "unparsable")

#: The lenient default, for evaluation and ``alignrl grade``: also reads answers stated in prose. The explicit
#: markers among them are ranked by position; ``bare`` and ``last_sentence`` are fallbacks, in this order.
DEFAULT_EXTRACTORS = ("boxed", "final_answer", "answer_heading", "answer_is", "bare", "last_sentence")
#: The strict chain the ``math`` training reward uses by default: only a boxed or explicitly marked final answer
#: counts (ranked by the same position rule), so a policy is never rewarded for an answer guessed from prose.
TRAINING_EXTRACTORS = ("boxed", "final_answer", "answer_heading")
RANKINGS = ("position", "order")


@dataclass(frozen=True)
class GraderConfig:
    """How answers are extracted and compared.

    ``extractors`` names the extractors in use: the explicit markers ``boxed`` (``\\boxed{}``/``\\fbox{}``/
    ``\\boxed 5``), ``final_answer`` ("Final Answer: x", "The final answer is x", or a "**Final Answer**" heading
    over the answer), ``answer_heading`` (a ``# Answer`` line, then the answer) and ``answer_is`` ("the answer is
    x", "Answer: x"); and the fallbacks ``bare`` (the whole output when it is one short line with at most one word
    outside ``\\text{}``), ``last_sentence`` (the last bold/math/number of the last sentence that has one) and
    ``last_number`` (opt-in). When a ``separators`` string (e.g. ``</think>``) occurs, only the text after its last
    occurrence is judged.

    The default rules (``ranking="position"``), each with an example:

    1. *The last explicit marker wins*, whatever its type: in "Final Answer: 4 ... (corrected) The answer is: 48."
       the answer is ``48``; in "The answer is 3. ... \\boxed{4}" it is ``4``.
    2. *A marker labels an answer only where it stands as a label*: "final answer" counts at a line start or in a
       heading, followed by ":", "is" or "=" or alone on its line ("**Final Answer**" over ``\\boxed{5}``), not in
       "To reach the final answer, I still need to subtract 4."
    3. *A sentence under a marker gives its one mathematical value* (``prose_value``): "# Answer\\n\\nThe train
       travels 120 miles." gives ``120``; a sentence with several values ("3 apples and 4 pears") stays as written.
    4. *A clean expression close to the end beats a later sentence* (``prefer_expression_chars``): in
       "\\boxed{3\\sqrt{2}}\\n\\nThe answer is: the side is about 4.24 units long." the box wins, as both lie
       within that many characters of the end.
    5. *A marker whose answer has no mathematical value never beats one that has*: in "\\boxed{5}. ... I checked
       that the answer is correct." the answer is ``5``; "Final Answer: Friday" still counts when it is the only one.
    6. *A marker inside another's span is the answer, but a box is whole*: "the answer is $\\boxed{5}$" gives ``5``;
       "\\boxed{\\text{the answer is 5}}" gives the box's content.
    7. *Fallbacks only when no marker found anything*, the first in ``extractors`` order that finds an answer.

    ``ranking="order"`` restores the older rule: the first extractor in ``extractors`` order that finds an answer
    wins (its last occurrence), whatever the positions.
    """

    extractors: tuple[str, ...] = DEFAULT_EXTRACTORS
    separators: tuple[str, ...] = ("</think>", "</thinking>", "<|end_of_thought|>")
    ranking: str = "position"  # "position" (rules 1-7 above) or "order" (first extractor in order wins)
    prefer_expression_chars: int = 500  # rule 4's "close to the end" (0: off)
    prose_value: bool = True  # rule 3
    timeout: float = 5.0  # seconds per answer that needs math-verify (hard limit: the worker is killed)
    use_math_verify: bool = True  # False: only the in-process string/number checks
    float_rounding: int = 6  # passed to math_verify.verify
    strict: bool = True  # passed to math_verify.verify
    max_answer_chars: int = 1000  # longer extracted answers are "unparsable" without further work
    max_gold_chars: int = 10_000  # a longer gold answer grades every answer wrong without further work
    tail_chars: int = 2000  # prose extractors (answer_is, final_answer, bare, last_*) look at this many last chars

    def __post_init__(self) -> None:
        if self.ranking not in RANKINGS:
            raise ValueError(f"GraderConfig.ranking must be one of {', '.join(RANKINGS)}, got {self.ranking!r}")
        if self.prefer_expression_chars < 0 or min(self.tail_chars, self.max_answer_chars, self.max_gold_chars) < 1:
            raise ValueError("GraderConfig: prefer_expression_chars must be >= 0; tail_chars, max_answer_chars and "
                             "max_gold_chars >= 1")

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
