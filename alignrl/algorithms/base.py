"""The contract between the training loop and an algorithm: plain tensors in, advantages and scalar losses out.

An algorithm is one file of pure tensor functions plus one registry entry: a subclass of :class:`Algorithm`
decorated with :func:`register_algorithm`. The loop never names an algorithm; per step it calls, in order,

1. ``shape(ShapingInputs)`` once per rollout batch (no grad): per-sample advantages, which samples train, and any
   extra per-sample / per-token tensors (token weights, shaped rewards, pair ids...) that ride on the batch;
2. ``counts(CountInputs)`` once per micro-batch: named counters (e.g. positive-sample tokens) that the learner sums
   over all micro-batches and ranks *before* any loss, so a loss can normalise by global totals;
3. ``loss(PolicyInputs)`` once per micro-batch (with grad) for the policy, and ``auxiliary_loss(name, AuxInputs)``
   for each auxiliary model that trains this step (``trains(step)``): a scalar to minimise plus detached stats.

Auxiliary trainable models (e.g. OREAL's token-level reward model) are declared by ``auxiliary_models()``; the
learner gives their per-token outputs to ``shape`` (computed before any update) and trains them with their own
optimiser. Rows are ordered by group: the K samples of one prompt are consecutive, and a micro-batch never splits
a group. This module imports torch and nothing else of alignrl, so algorithms are testable with hand-made tensors.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor


@dataclass
class AuxiliaryModel:
    """A second trainable model an algorithm needs; the learner builds, prepares, checkpoints and steps it.

    ``head="scalar"`` replaces the LM head by a bias-free one-output linear layer, so the model returns one score
    per completion token (read at the position that *predicts* the token, like the policy's log-probs);
    ``head="lm"`` keeps the language-model head (its per-token output is then the token log-prob).
    """

    name: str
    init: str = "policy"  # "policy": a copy of the starting policy; otherwise a model folder or hub name
    head: str = "scalar"  # "scalar" | "lm"
    lr: float = 1e-6
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # 0 = no clipping


@dataclass
class ShapingInputs:
    """What an algorithm sees once per rollout batch (this rank's groups), before any update."""

    rewards: Tensor  # [P, K] scalar reward of each sample, K samples per prompt
    mask: Tensor  # [P*K, T] 1.0 on completion tokens (EOS included), 0 on padding
    sampler_logp: Tensor  # [P*K, T] token log-probs reported by the rollout engine (detached)
    ref_logp: Tensor | None = None  # [P*K, T] reference-policy log-probs, when ``needs_reference``
    truncated: Tensor | None = None  # [P, K] bool: the sample hit the token limit without stopping
    prompt_index: Tensor | None = None  # [P] dataset row of each group's prompt (stable across steps and ranks)
    step: int = 0  # the optimiser step being prepared (1-based)
    aux_outputs: dict[str, Tensor] = field(default_factory=dict)  # name -> [P*K, T] per-token auxiliary outputs


@dataclass
class Shaped:
    """Result of ``Algorithm.shape``. Every tensor is sliced with its rows into micro-batches."""

    advantages: Tensor  # [P, K] per-sample advantage (broadcast over the sample's tokens)
    keep: Tensor  # [P, K] bool: which samples enter the update (OREAL-style filters drop some)
    metrics: dict[str, float] = dataclasses.field(default_factory=dict)
    token_weights: Tensor | None = None  # [P*K, T] per-token weights the loss multiplies in (e.g. a token RM's)
    per_sample: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # name -> [P, K] (pair ids, rewards)
    per_token: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # name -> [P*K, T]


@dataclass
class CountInputs:
    """One micro-batch as ``counts`` sees it (no model outputs: counters are known before any forward pass)."""

    mask: Tensor  # [B, T]
    advantages: Tensor  # [B]
    rewards: Tensor  # [B]
    group_ids: Tensor  # [B]
    per_sample: dict[str, Tensor]  # name -> [B]
    per_token: dict[str, Tensor]  # name -> [B, T]


@dataclass
class PolicyInputs:
    """One micro-batch of whole (kept parts of) groups, as the policy loss sees it."""

    logp: Tensor  # [B, T] current-policy log-probs of the completion tokens (requires grad)
    old_logp: Tensor  # [B, T] log-probs of the policy before this update (detached)
    mask: Tensor  # [B, T] 1.0 on completion tokens (EOS included)
    advantages: Tensor  # [B] from ``shape``
    rewards: Tensor  # [B] raw rewards
    group_size: int  # K: samples drawn per prompt (after filtering a group may keep fewer: see ``group_ids``)
    num_tokens: float  # completion tokens of the kept samples in the whole optimiser step, all ranks (normaliser)
    num_sequences: float  # kept sequences in the whole optimiser step over all ranks
    max_tokens: int  # the rollout's max_new_tokens (for constant-length normalisation)
    ref_logp: Tensor | None = None  # [B, T] frozen reference policy, when ``needs_reference``
    token_weights: Tensor | None = None  # [B, T] from ``Shaped.token_weights``
    entropy: Tensor | None = None  # [B, T] policy entropy per token (detached unless an algorithm wants grad)
    group_ids: Tensor | None = None  # [B] group (prompt) index of each row within this rank's rollout batch
    sampler_logp: Tensor | None = None  # [B, T] the engine's log-probs of the sampled tokens (for TIS corrections)
    logits: Tensor | None = None  # [B, T, V] tempered policy logits (with grad), when ``needs_logits``
    exact_kl: Tensor | None = None  # [B, T] exact per-token KL(pi||ref) over the vocabulary, when ``needs_exact_kl``
    counts: dict[str, float] = field(default_factory=dict)  # global sums of ``Algorithm.counts`` (all ranks)
    per_sample: dict[str, Tensor] = field(default_factory=dict)  # name -> [B] from ``Shaped.per_sample``
    per_token: dict[str, Tensor] = field(default_factory=dict)  # name -> [B, T] from ``Shaped.per_token``


@dataclass
class AuxInputs:
    """One micro-batch as an auxiliary model's loss sees it."""

    outputs: Tensor  # [B, T] the auxiliary model's per-token outputs (with grad)
    mask: Tensor  # [B, T]
    advantages: Tensor  # [B]
    rewards: Tensor  # [B]
    group_ids: Tensor  # [B]
    num_tokens: float  # global kept tokens of the step
    num_sequences: float  # global kept sequences of the step
    counts: dict[str, float] = field(default_factory=dict)
    per_sample: dict[str, Tensor] = field(default_factory=dict)
    per_token: dict[str, Tensor] = field(default_factory=dict)


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

    @property
    def needs_logits(self) -> bool:
        """Whether ``PolicyInputs.logits`` must be filled (costs [B, T, V] memory per micro-batch)."""
        return False

    @property
    def needs_exact_kl(self) -> bool:
        """Whether the learner computes ``PolicyInputs.exact_kl`` from policy and reference logits (implies a
        reference forward pass inside every micro-batch)."""
        return False

    def auxiliary_models(self) -> list[AuxiliaryModel]:
        """Trainable models besides the policy (none by default)."""
        return []

    def trains(self, step: int) -> set[str]:
        """Names of the models that take an optimiser step at ``step`` (1-based); "policy" is the policy.
        A model not named gets no optimiser step at all that step (bit-identical weights)."""
        return {"policy", *(m.name for m in self.auxiliary_models())}

    def shape(self, inputs: ShapingInputs) -> Shaped:  # pragma: no cover - abstract
        raise NotImplementedError

    def counts(self, inputs: CountInputs) -> dict[str, Tensor]:
        """Per-micro-batch counters to be summed over micro-batches and ranks (e.g. positive-sample tokens)."""
        return {}

    def loss(self, inputs: PolicyInputs) -> tuple[Tensor, dict[str, Tensor]]:  # pragma: no cover - abstract
        raise NotImplementedError

    def auxiliary_loss(self, name: str, inputs: AuxInputs) -> tuple[Tensor, dict[str, Tensor]]:
        raise NotImplementedError(f"{type(self).__name__} declares auxiliary model '{name}' but no auxiliary_loss")


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
