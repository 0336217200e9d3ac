"""``debate_hf``: the ``hf`` engine with every debater prompt's decoding constrained to its unrevealed indices.

The RL loop builds ``SamplingParams`` from the recipe and knows nothing of debates. For self-play training the
recipe names this engine instead (``rollout.engine: {name: debate_hf}``): before each ``generate`` it reads the
revealed mask at the end of every prompt (:func:`alignrl.debate.debaters.unrevealed_from_prompt`) and sets
``allowed_token_ids`` to the labels of the unrevealed units, so a sampled move is always legal and its reported
log-prob is that of the constrained distribution. (The learner recomputes log-probs without the constraint:
the policy gradient is taken on the unconstrained softmax, which moves probability from every other token,
illegal ones included, to the rewarded index.)

Importing this module registers the engine; ``alignrl.rollout`` imports it, so ``alignrl train`` runs a self-play recipe.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from alignrl.debate.debaters import DEFAULT_LABELS, label_token_ids, unrevealed_from_prompt
from alignrl.rollout.base import Completion, RolloutEngine, SamplingParams, WeightUpdate, register_engine
from alignrl.rollout.hf_engine import HFEngine, HFEngineSettings


@dataclass
class DebateEngineSettings(HFEngineSettings):
    """The ``hf`` engine's settings plus the index labels of the debater prompts."""

    labels: str = DEFAULT_LABELS


class DebateEngine(RolloutEngine):
    """Wraps an :class:`HFEngine`; see the module docstring."""

    def __init__(self, inner: HFEngine, labels: str):
        self.inner, self.labels = inner, labels
        self.label_ids = label_token_ids(inner.tokenizer, labels)

    @property
    def shares_learner_weights(self) -> bool:
        return self.inner.shares_learner_weights

    @property
    def weights_version(self) -> int:  # type: ignore[override]
        return self.inner.weights_version

    def allowed(self, prompts: list[list[int]]) -> list[list[int]]:
        texts = self.inner.tokenizer.batch_decode(prompts, skip_special_tokens=True)
        return [[self.label_ids[i] for i in unrevealed_from_prompt(text, self.labels)] for text in texts]

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        if params.allowed_token_ids is None:
            params = dataclasses.replace(params, allowed_token_ids=self.allowed(prompts))
        return self.inner.generate(prompts, params)

    def load_weights(self, update: WeightUpdate) -> None:
        self.inner.load_weights(update)

    def close(self) -> None:
        self.inner.close()


@register_engine("debate_hf", DebateEngineSettings)
def _build_debate_engine(settings: DebateEngineSettings, *, model: Any, model_path: str | None, tokenizer: Any,
                         dtype: Any, device: str | None) -> DebateEngine:
    hf = HFEngineSettings(**{f.name: getattr(settings, f.name) for f in dataclasses.fields(HFEngineSettings)})
    if model is not None:
        inner = HFEngine.from_model(model, tokenizer, hf, dtype=dtype, device=device)
    else:
        inner = HFEngine.from_pretrained(model_path, dtype=dtype, device=device, settings=hf, tokenizer=tokenizer)
    return DebateEngine(inner, settings.labels)
