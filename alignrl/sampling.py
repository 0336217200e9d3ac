"""Prompt samplers: which dataset rows each step trains on, with state that checkpoints save and restore exactly.

A sampler is a registry entry (``data.sampler: {name: ..., <its Params>}``). Every rank holds an identical copy:
``next_indices`` returns the step's rows over all ranks (each rank then takes its own share), and ``observe``
receives what was learned about *all* of the step's prompts (gathered over ranks), so samplers that adapt to
difficulty (per-prompt pass rates) stay in step on every rank. ``state_dict`` must capture everything that
decides future picks, so a resumed run trains on exactly the prompts the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor


class PromptSampler:
    """Base class. Subclasses set ``Params`` and implement ``next_indices`` and the state methods."""

    name: ClassVar[str] = ""
    Params: ClassVar[type] = object
    observes: ClassVar[bool] = False  # True: the loop gathers the step's rewards over ranks and calls ``observe``

    def __init__(self, params: Any, size: int, prompts_per_step: int, seed: int, shuffle: bool = True):
        self.params, self.size, self.per_step, self.seed, self.shuffle = params, size, prompts_per_step, seed, shuffle

    def next_indices(self) -> list[int]:  # pragma: no cover - abstract
        """The dataset rows of the next step, over all ranks (``prompts_per_step`` of them)."""
        raise NotImplementedError

    def observe(self, indices: list[int], rewards: Tensor) -> None:
        """After scoring: ``rewards`` [P, K] of the step's prompts ``indices`` (all ranks, in pick order)."""

    def state_dict(self) -> dict[str, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def load_state_dict(self, state: dict[str, Any]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def epoch(self) -> float:
        """Passes over the dataset so far (for logging)."""
        return 0.0


_SAMPLERS: dict[str, type[PromptSampler]] = {}


def register_sampler(name: str):
    """Class decorator: make a :class:`PromptSampler` subclass available as ``data.sampler.name: <name>``."""

    def decorate(cls: type[PromptSampler]) -> type[PromptSampler]:
        if not dataclasses.is_dataclass(cls.Params):
            raise TypeError(f"sampler '{name}': Params must be a dataclass")
        cls.name = name
        _SAMPLERS[name] = cls
        return cls

    return decorate


def sampler_class(name: str) -> type[PromptSampler]:
    if name not in _SAMPLERS:
        raise KeyError(f"unknown prompt sampler '{name}'; registered: {', '.join(sorted(_SAMPLERS))}")
    return _SAMPLERS[name]


def rank_share(indices: list[int], rank: int, world: int) -> list[int]:
    """This rank's share of a step's rows (strided, so every rank gets the same count)."""
    if len(indices) % world:
        raise ValueError(f"rollout.prompts_per_step ({len(indices)}) must be divisible by the number of "
                         f"processes ({world})")
    return indices[rank::world]


@dataclass
class EpochParams:
    """The default sampler has no settings of its own (``data.shuffle`` decides the order)."""


@register_sampler("epoch")
class EpochSampler(PromptSampler):
    """Seeded shuffle per epoch (or dataset order); a global cursor makes resume exact."""

    Params = EpochParams

    def __init__(self, params: Any, size: int, prompts_per_step: int, seed: int, shuffle: bool = True):
        super().__init__(params, size, prompts_per_step, seed, shuffle)
        self.cursor = 0  # prompts consumed so far, over all ranks
        self._epoch, self._order = -1, torch.arange(size)

    def _order_for(self, epoch: int) -> Tensor:
        if epoch != self._epoch:
            self._epoch = epoch
            self._order = (torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed + epoch))
                           if self.shuffle else torch.arange(self.size))
        return self._order

    def next_indices(self) -> list[int]:
        picked = [int(self._order_for(pos // self.size)[pos % self.size])
                  for pos in range(self.cursor, self.cursor + self.per_step)]
        self.cursor += self.per_step
        return picked

    def state_dict(self) -> dict[str, Any]:
        return {"cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cursor = int(state["cursor"])

    @property
    def epoch(self) -> float:
        return self.cursor / self.size


def build_sampler(name: str, params: Any, size: int, prompts_per_step: int, seed: int,
                  shuffle: bool = True) -> PromptSampler:
    return sampler_class(name)(params, size, prompts_per_step, seed, shuffle)


def sampling_seed(seed: int, step: int, rank: int) -> int:
    """The engine's sampling seed for (run seed, step, rank): resumed runs sample what uninterrupted ones did."""
    return (seed * 1_000_003 + step * 7919 + rank * 104_729) % (2**31 - 1)


from alignrl import difficulty_sampler  # noqa: F401,E402  (registers pass_rate_buckets)
