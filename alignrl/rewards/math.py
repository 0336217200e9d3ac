"""The ``math`` reward: the shared answer grader (:mod:`alignrl.grading`) turned into scores.

Recipe use::

    reward:
      functions:
        - name: math
          kwargs: {mode: pm1, truncated_score: -1.0, answer_field: answer}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from alignrl.grading import GraderConfig, shared_pool
from alignrl.rewards.registry import register_reward

MODES = {"binary": (1.0, 0.0), "pm1": (1.0, -1.0)}


def completion_text(completion: Any) -> str:
    """A completion as text: a string, or (TRL conversational format) the last message's ``content``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, Sequence) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    return "" if completion is None else str(completion)


@register_reward("math")
def math_reward(prompts: Sequence[Any], completions: Sequence[Any], *, answer_field: str = "answer",
                mode: str = "binary", truncated_score: float | None = None, no_answer_score: float | None = None,
                timeout: float | None = None, extractors: Sequence[str] | None = None,
                separators: Sequence[str] | None = None, **columns: Any) -> list[float]:
    """Score each completion against the gold answer in column ``answer_field``.

    ``mode``: ``binary`` (1 correct, 0 otherwise) or ``pm1`` (+1 / -1). ``truncated_score``: the score of a
    completion whose finish reason is ``length`` (default: graded like any other). ``no_answer_score``: the
    score when no answer was found or it could not be parsed (default: the wrong score). ``timeout``,
    ``extractors`` and ``separators`` override the grader's :class:`~alignrl.grading.GraderConfig`. The batch
    is graded in one call to the shared :class:`~alignrl.grading.GraderPool` (bounded time per answer).
    """
    if mode not in MODES:
        raise ValueError(f"math reward: mode must be one of {sorted(MODES)}, got {mode!r}")
    if answer_field not in columns:
        known = ", ".join(sorted(k for k in columns if k not in ("finish_reasons", "completion_ids"))) or "(none)"
        raise KeyError(f"math reward: no column '{answer_field}' with the gold answers (set answer_field=); "
                       f"columns: {known}")
    golds = columns[answer_field]
    if len(golds) != len(completions):
        raise ValueError(f"math reward: {len(golds)} gold answers for {len(completions)} completions")
    finish = columns.get("finish_reasons") or [None] * len(completions)
    config = GraderConfig()
    overrides = {"timeout": timeout, "extractors": extractors, "separators": separators}
    config = replace(config, **{k: (tuple(v) if isinstance(v, (list, tuple)) else v)
                                for k, v in overrides.items() if v is not None})
    right, wrong = MODES[mode]
    empty = wrong if no_answer_score is None else float(no_answer_score)
    verdicts = shared_pool().grade_many([(completion_text(c), str(g)) for c, g in zip(completions, golds)], config)
    scores = []
    for verdict, reason in zip(verdicts, finish):
        if reason == "length" and truncated_score is not None:
            scores.append(float(truncated_score))
        elif verdict.correct:
            scores.append(right)
        elif verdict.reason in ("no_answer", "unparsable"):
            scores.append(empty)
        else:
            scores.append(wrong)
    return scores
