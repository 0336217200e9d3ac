"""``bt_rm``: a learned Bradley-Terry reward model as an RL reward term.

    reward:
      functions:
        - {name: math, weight: 1.0}
        - {name: bt_rm, weight: 0.5, kwargs: {path: runs/rm_quickstart, normalize: running}}

The model (a folder saved by ``alignrl rm train``, or any ``AutoModelForSequenceClassification`` with one label)
is loaded once in :meth:`setup` on the run's device and scores each batch in micro-batches of ``batch_size``. The
text it scores is encoded exactly as in training and in ``alignrl score`` (:func:`alignrl.reward_model.pairs.encode`):
the prompt as the policy saw it, then the completion, then EOS; with ``prompt_column`` set, the prompt is that
dataset column instead, and with ``chat: true`` the pair is formatted by the reward model's chat template as a
user and an assistant message.

``normalize``: ``none`` (raw scores), ``batch`` (whitened within each batch of this rank), or ``running`` (a
running mean and variance over every score seen, updated with the batch before it is normalised, saved in every
checkpoint so a resumed run continues with the same statistics). The raw score's mean is logged as
``reward/bt_rm/raw``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from alignrl.rewards.base import Reward, RewardContext, RewardInputs, RewardOutput
from alignrl.rewards.registry import RewardError, register_reward

NORMALIZATIONS = ("none", "batch", "running")


@register_reward("bt_rm")
class BradleyTerryReward(Reward):
    """Scores from a sequence-classification reward model; see the module docstring."""

    def __init__(self, path: str, batch_size: int = 32, normalize: Literal["none", "batch", "running"] = "none",
                 max_length: int | None = None, truncation_side: Literal["left", "right"] = "left",
                 dtype: str = "float32", prompt_column: str | None = None, chat: bool = False,
                 clip: float | None = None, eps: float = 1e-6):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
        if truncation_side not in ("left", "right"):
            raise ValueError(f"truncation_side must be 'left' or 'right', got {truncation_side!r}")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self.path, self.batch_size, self.normalize = str(path), int(batch_size), normalize
        self.max_length, self.truncation_side, self.dtype = max_length, truncation_side, dtype
        self.prompt_column, self.chat, self.clip, self.eps = prompt_column, bool(chat), clip, float(eps)
        self.count, self.mean, self.m2 = 0, 0.0, 0.0  # running statistics (Welford)
        self.scorer: Any = None
        self.tokenizer: Any = None

    def setup(self, context: RewardContext) -> None:
        from alignrl.learner.models import ModelLoadError
        from alignrl.reward_model.scorer import SequenceScorer, load_reward_model

        try:
            model, self.tokenizer = load_reward_model(self.path, device=str(context.device), dtype=self.dtype)
        except ModelLoadError as err:
            raise RewardError(f"reward 'bt_rm': {err}") from err
        self.scorer = SequenceScorer(model, self.tokenizer, batch_size=self.batch_size, max_length=self.max_length,
                                     truncation_side=self.truncation_side)

    def _encode(self, inputs: RewardInputs) -> tuple[list[list[int]], int]:
        from alignrl.reward_model.pairs import encode

        if self.prompt_column is not None and self.prompt_column not in inputs.columns:
            raise RewardError(f"reward 'bt_rm': prompt_column '{self.prompt_column}' is not a dataset column; "
                              f"columns: {sorted(inputs.columns)}")
        prompts = inputs.columns[self.prompt_column] if self.prompt_column else inputs.prompts
        ids, truncated = [], 0
        for prompt, completion in zip(prompts, inputs.completions):
            if self.chat:
                encoded = encode(self.tokenizer, [{"role": "user", "content": str(prompt)}],
                                 [{"role": "assistant", "content": completion}], self.scorer.max_length,
                                 self.truncation_side)
            else:
                encoded = encode(self.tokenizer, str(prompt), completion, self.scorer.max_length,
                                 self.truncation_side)
            ids.append(encoded.input_ids)
            truncated += encoded.truncated
        return ids, truncated

    def score(self, inputs: RewardInputs) -> RewardOutput:
        if self.scorer is None:
            raise RewardError("reward 'bt_rm': score() called before setup()")
        ids, truncated = self._encode(inputs)
        raw = [float(s) for s in self.scorer.score_ids(ids).float().cpu()]
        scores = self._normalise(raw)
        if self.clip is not None:
            scores = [max(-self.clip, min(self.clip, s)) for s in scores]
        return RewardOutput(scores, {"raw": raw, "truncated": [float(truncated > 0)] * len(raw)})

    def _normalise(self, raw: list[float]) -> list[float]:
        if self.normalize == "none" or not raw:
            return raw
        if self.normalize == "batch":
            mean = sum(raw) / len(raw)
            std = math.sqrt(sum((s - mean) ** 2 for s in raw) / len(raw))
            return [(s - mean) / (std + self.eps) for s in raw]
        for s in raw:  # running: Welford's update, then normalise with the statistics so far
            self.count += 1
            delta = s - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (s - self.mean)
        std = math.sqrt(self.m2 / self.count) if self.count > 1 else 1.0
        return [(s - self.mean) / (std + self.eps) for s in raw]

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2} if self.normalize == "running" else {}

    def load_state_dict(self, state: dict) -> None:
        if self.normalize != "running":
            super().load_state_dict(state)
            return
        self.count, self.mean, self.m2 = int(state.get("count", 0)), float(state.get("mean", 0.0)), \
            float(state.get("m2", 0.0))

    def close(self) -> None:
        self.scorer = None

    def describe(self) -> dict:
        return {**super().describe(), "path": self.path, "normalize": self.normalize, "batch_size": self.batch_size,
                "max_length": self.max_length, "truncation_side": self.truncation_side, "dtype": self.dtype,
                "prompt_column": self.prompt_column, "chat": self.chat, "clip": self.clip}
