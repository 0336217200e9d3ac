"""The contract between the training loop and an algorithm: plain tensors in, advantages and a scalar loss out.

An algorithm is one file of pure tensor functions plus one registry entry: a subclass of :class:`Algorithm`
decorated with :func:`register_algorithm`. The loop never names an algorithm; it calls, in order,

1. ``shape(ShapingInputs)`` once per rollout batch (no grad): per-sample advantages and which samples train;
2. ``loss(PolicyInputs)`` once per micro-batch (with grad): a scalar to minimise plus detached statistics,
   each a mean over the micro-batch (the learner averages them over micro-batches, weighted by tokens).

Rows are ordered by group: the K samples of one prompt are consecutive, and a micro-batch never splits a group.
This module imports torch and nothing else of alignrl, so algorithms are testable with hand-made tensors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclass
class ShapingInputs:
    """What an algorithm sees once per rollout batch (this rank's groups), before any update."""

    rewards: Tensor  # [P, K] scalar reward of each sample, K samples per prompt
    mask: Tensor  # [P*K, T] 1.0 on completion tokens (EOS included), 0 on padding
    sampler_logp: Tensor  # [P*K, T] token log-probs of the sampling policy (detached)
    ref_logp: Tensor | None = None  # [P*K, T] reference-policy log-probs, when ``needs_reference``
    truncated: Tensor | None = None  # [P, K] bool: the sample hit the token limit without stopping


@dataclass
class Shaped:
    """Result of ``Algorithm.shape``."""

    advantages: Tensor  # [P, K] per-sample advantage (broadcast over the sample's tokens)
    keep: Tensor  # [P, K] bool: which samples enter the update (OREAL-style filters drop some)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclass
class PolicyInputs:
    """One micro-batch of whole groups, as the loss sees it."""

    logp: Tensor  # [B, T] current-policy log-probs of the completion tokens (requires grad)
    old_logp: Tensor  # [B, T] log-probs of the policy before this update (detached)
    mask: Tensor  # [B, T] 1.0 on completion tokens (EOS included)
    advantages: Tensor  # [B] from ``shape``
    rewards: Tensor  # [B] raw rewards
    group_size: int  # K
    num_tokens: float  # completion tokens of the kept samples in the whole optimiser step, all ranks (normaliser)
    num_sequences: float  # kept sequences in the whole optimiser step over all ranks
    max_tokens: int  # the rollout's max_new_tokens (for constant-length normalisation)
    ref_logp: Tensor | None = None  # [B, T] frozen reference policy, when ``needs_reference``
    token_weights: Tensor | None = None  # [B, T] extra per-token weights from a co-trained component
    entropy: Tensor | None = None  # [B, T] policy entropy per token (detached unless an algorithm wants grad)


class Algorithm:
    """Base class of a registry entry. Subclasses set ``Params`` (a dataclass of hyperparameters)."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = object

    def __init__(self, params: Any):
        self.params = params

    @property
    def needs_reference(self) -> bool:
        """Whether the loop must compute reference log-probs (only when a KL coefficient is set)."""
        return False

    @property
    def needs_entropy(self) -> bool:
        """Whether ``PolicyInputs.entropy`` must carry gradient (an entropy bonus); it is always filled, detached."""
        return False

    def shape(self, inputs: ShapingInputs) -> Shaped:  # pragma: no cover - abstract
        raise NotImplementedError

    def loss(self, inputs: PolicyInputs) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError


_ALGORITHMS: dict[str, type[Algorithm]] = {}


def register_algorithm(name: str):
    """Class decorator: make an :class:`Algorithm` subclass available as ``algorithm.name: <name>`` in recipes."""

    def decorate(cls: type[Algorithm]) -> type[Algorithm]:
        if name in _ALGORITHMS and _ALGORITHMS[name] is not cls:
            raise ValueError(f"algorithm '{name}' is already registered by {_ALGORITHMS[name].__module__}")
        if not dataclasses.is_dataclass(cls.Params):
            raise TypeError(f"algorithm '{name}': Params must be a dataclass")
        cls.name = name
        _ALGORITHMS[name] = cls
        return cls

    return decorate


def algorithm_class(name: str) -> type[Algorithm]:
    """The registered class for ``name``; importing ``alignrl.algorithms`` registers the built-in ones."""
    if name not in _ALGORITHMS:
        known = ", ".join(sorted(_ALGORITHMS)) or "(none)"
        raise KeyError(f"unknown algorithm '{name}'; registered: {known}")
    return _ALGORITHMS[name]


def registered_algorithms() -> list[str]:
    return sorted(_ALGORITHMS)


def masked_sum(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Sum of ``values`` where ``mask`` is 1; masked entries contribute exactly nothing (NaN/inf included)."""
    masked = torch.where(mask.bool(), values, torch.zeros_like(values))
    return masked.sum() if dim is None else masked.sum(dim)


def masked_mean(values: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``values`` over entries where ``mask`` is 1 (0 where a row has no valid entry)."""
    return masked_sum(values, mask, dim) / mask.sum(dim).clamp(min=1) if dim is not None else (
        masked_sum(values, mask) / mask.sum().clamp(min=1)
    )
