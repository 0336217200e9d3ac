"""The rollout engine interface: token ids in, sampled completions with their token log-probs out.

Engines know nothing of algorithms, rewards or the learner. The loop (and evaluation) only calls
``generate``, ``load_weights`` and ``close``. A new engine (vLLM, a remote server) registers itself with
:func:`register_engine` and is chosen by ``rollout.engine`` in a recipe.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor

FinishReason = Literal["stop", "length"]


@dataclass
class SamplingParams:
    """How to sample. ``temperature == 0`` means greedy decoding."""

    n: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0 = off
    max_new_tokens: int = 256
    stop: list[str] = field(default_factory=list)  # stop strings; the stop string is kept in the completion
    seed: int | None = None  # engines that own an RNG (vLLM) seed it from here; HF uses the torch RNG


@dataclass
class Completion:
    """One sampled completion."""

    token_ids: list[int]  # completion tokens, EOS included when the model stopped on EOS
    logprobs: list[float]  # log-prob of each sampled token under the sampling distribution at ``temperature``
    text: str  # decoded completion (special tokens skipped)
    finish_reason: FinishReason  # "stop": EOS or a stop string; "length": hit max_new_tokens


class RolloutEngine:
    """Base class for engines. ``generate`` returns, for each prompt, ``params.n`` completions."""

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Completion]]:
        raise NotImplementedError  # pragma: no cover

    def load_weights(self, weights: Iterable[tuple[str, Tensor]]) -> None:
        """Replace the served weights (Hugging Face parameter names). Called after each policy update.

        ``weights`` is lazy: an engine that already shares the learner's parameters never iterates it.
        """
        raise NotImplementedError  # pragma: no cover

    def close(self) -> None:
        """Release processes and memory."""


EngineFactory = Callable[..., RolloutEngine]
_ENGINES: dict[str, EngineFactory] = {}


def register_engine(name: str) -> Callable[[EngineFactory], EngineFactory]:
    def decorate(factory: EngineFactory) -> EngineFactory:
        _ENGINES[name] = factory
        return factory

    return decorate


def build_engine(name: str, **kwargs: Any) -> RolloutEngine:
    """Build the engine registered as ``name`` (``hf`` is built in)."""
    import alignrl.rollout  # noqa: F401  (registers the built-in engines)

    if name not in _ENGINES:
        raise KeyError(f"unknown rollout engine '{name}'; registered: {', '.join(sorted(_ENGINES))}")
    return _ENGINES[name](**kwargs)
