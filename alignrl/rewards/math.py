"""The ``math`` reward: the shared answer grader (:mod:`alignrl.grading`) turned into scores.

Recipe use::

    reward:
      functions:
        - name: math
          kwargs: {mode: pm1, truncated_score: -1.0, answer_field: answer}

For training it reads only a boxed or explicitly marked final answer (``TRAINING_EXTRACTORS``), so a policy is
never rewarded for an answer guessed from prose; among those markers the same position rule as evaluation picks
the answer (the last marker wins: ``\\boxed{3} ... Final Answer: 5`` is graded as 5; the rules are in
:class:`~alignrl.grading.GraderConfig`). ``extractors: [boxed, ..., last_sentence]`` widens it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any

from alignrl.grading import EXTRACTORS, GraderConfig, shared_pool
from alignrl.grading.config import TRAINING_EXTRACTORS
from alignrl.rewards.base import Reward, RewardInputs, RewardOutput
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
class MathReward(Reward):
    """Score each completion against the gold answer in column ``answer_field``.

    ``mode``: ``binary`` (1 correct, 0 otherwise) or ``pm1`` (+1 / -1). ``truncated_score``: the score of a
    completion whose finish reason is ``length`` (default: graded like any other). ``no_answer_score``: the
    score when no answer was found or it could not be parsed (default: the wrong score). ``extractors``
    (default ``TRAINING_EXTRACTORS``: boxed and explicit final answers only, ranked by position: the last one
    wins), ``separators`` and ``timeout`` set the grader's :class:`~alignrl.grading.GraderConfig`. A batch is
    graded in one call to the shared :class:`~alignrl.grading.GraderPool` (bounded time per answer). ``info``
    holds per-sample ``correct``, ``no_answer`` and ``truncated`` (0/1).
    """

    def __init__(self, answer_field: str = "answer", mode: str = "binary", truncated_score: float | None = None,
                 no_answer_score: float | None = None, timeout: float | None = None,
                 extractors: Sequence[str] | None = None, separators: Sequence[str] | None = None):
        if mode not in MODES:
            raise ValueError(f"math reward: mode must be one of {sorted(MODES)}, got {mode!r}")
        if isinstance(extractors, str) or isinstance(separators, str):
            raise ValueError("math reward: extractors and separators are lists of names/strings, not one string")
        names = tuple(TRAINING_EXTRACTORS if extractors is None else extractors)
        unknown = [n for n in names if n not in EXTRACTORS]
        if unknown or not names:
            raise ValueError(f"math reward: unknown extractor(s) {unknown or '(empty list)'}; "
                             f"known: {', '.join(EXTRACTORS)}")
        if timeout is not None and not timeout > 0:
            raise ValueError(f"math reward: timeout must be > 0, got {timeout}")
        self.answer_field, self.mode = answer_field, mode
        self.truncated_score = None if truncated_score is None else float(truncated_score)
        self.no_answer_score = None if no_answer_score is None else float(no_answer_score)
        config = replace(GraderConfig(), extractors=names)
        if separators is not None:
            config = replace(config, separators=tuple(separators))
        if timeout is not None:
            config = replace(config, timeout=float(timeout))
        self.config = config

    def score(self, inputs: RewardInputs) -> RewardOutput:
        return self.grade(inputs.completions, inputs.keyword_columns())

    def grade(self, completions: Sequence[Any], columns: dict[str, Any]) -> RewardOutput:
        """Scores (and per-sample info) of ``completions`` given the keyword columns (TRL convention)."""
        if self.answer_field not in columns:
            known = ", ".join(sorted(k for k in columns if k not in ("finish_reasons", "completion_ids"))) or "(none)"
            raise KeyError(f"math reward: no column '{self.answer_field}' with the gold answers (set "
                           f"answer_field=); columns: {known}")
        golds = columns[self.answer_field]
        if len(golds) != len(completions):
            raise ValueError(f"math reward: {len(golds)} gold answers for {len(completions)} completions")
        finish = columns.get("finish_reasons") or [None] * len(completions)
        right, wrong = MODES[self.mode]
        empty = wrong if self.no_answer_score is None else self.no_answer_score
        pairs = [(completion_text(c), str(g)) for c, g in zip(completions, golds)]
        verdicts = shared_pool().grade_many(pairs, self.config)
        scores, correct, no_answer, truncated = [], [], [], []
        for verdict, reason in zip(verdicts, finish):
            missing = verdict.reason in ("no_answer", "unparsable")
            if reason == "length" and self.truncated_score is not None:
                scores.append(self.truncated_score)
            elif verdict.correct:
                scores.append(right)
            else:
                scores.append(empty if missing else wrong)
            correct.append(float(verdict.correct))
            no_answer.append(float(missing))
            truncated.append(float(reason == "length"))
        return RewardOutput(scores, {"correct": correct, "no_answer": no_answer, "truncated": truncated})

    def describe(self) -> dict:
        grader = asdict(self.config)
        return {**super().describe(), "answer_field": self.answer_field, "mode": self.mode,
                "truncated_score": self.truncated_score, "no_answer_score": self.no_answer_score,
                "extractors": list(self.config.extractors),
                "grader": {k: list(v) if isinstance(v, tuple) else v for k, v in grader.items()}}


def math_reward(prompts: Sequence[Any], completions: Sequence[Any], *, answer_field: str = "answer",
                mode: str = "binary", truncated_score: float | None = None, no_answer_score: float | None = None,
                timeout: float | None = None, extractors: Sequence[str] | None = None,
                separators: Sequence[str] | None = None, **columns: Any) -> list[float]:
    """:class:`MathReward` as a TRL-style function ``fn(prompts, completions, **columns) -> list[float]``
    (same settings and defaults: the strict ``TRAINING_EXTRACTORS`` unless ``extractors`` is given)."""
    reward = MathReward(answer_field=answer_field, mode=mode, truncated_score=truncated_score,
                        no_answer_score=no_answer_score, timeout=timeout, extractors=extractors,
                        separators=separators)
    return reward.grade(completions, columns).scores
