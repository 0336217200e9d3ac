"""``pass_rate_buckets``: difficulty-balanced prompt resampling (OREAL, design/algorithms.md §2 item 8).

Each epoch is a list of dataset rows in which a prompt appears as many times as its pass-rate bucket says
(official ``oreal/datasets/prompt.py``): [0, 0.2) x6, [0.2, 0.6) x4, [0.6, 0.8) x2, anything else (>= 0.8) dropped;
bucket i is ``edges[i] <= p < edges[i+1]`` with ``repeats[i]`` copies. The list is shuffled with a generator
seeded by (seed, epoch) (``shuffle: false``: round-robin, copy 1 of every prompt, then copy 2, ...), and steps
take consecutive slices of it; a prompt may occur twice in one step, as in the official dataloader.

Pass rates come from an offline column (``pass_rate_field``, e.g. ``internlm/OREAL-RL-Prompts``' ``pass_rate``),
read by :meth:`PassRateBucketSampler.attach_rows` from the run's dataset rows, or (``pass_rate_field: null``) are
measured online: ``observes`` is on, and after each step the fraction of samples with reward > 0 of every prompt
(all ranks) updates its rate (``ema`` = weight of the old estimate). Online rates change the buckets at the next
epoch, when the list is rebuilt. A prompt without a rate (never measured, or a null cell) takes ``prior`` (default
0: the hardest bucket); ``prior: null`` puts it in the epoch exactly once. State (epoch, cursor, the epoch's list,
the pass rates, steps taken) round-trips exactly; the shuffle needs no RNG state (its seed is derived).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from alignrl.sampling import PromptSampler, register_sampler


@dataclass
class PassRateBucketParams:
    """Settings of ``data.sampler: {name: pass_rate_buckets, ...}``."""

    edges: list[float] = field(default_factory=lambda: [0.0, 0.2, 0.6, 0.8])  # bucket i: [edges[i], edges[i+1])
    repeats: list[int] = field(default_factory=lambda: [6, 4, 2])  # copies per epoch of a prompt in bucket i
    pass_rate_field: str | None = "pass_rate"  # offline column of the dataset; null = measure online
    prior: float | None = 0.0  # rate of a prompt with none; null = such a prompt appears once per epoch
    ema: float = 0.0  # online: new rate = ema * old + (1 - ema) * measured (0 = the latest measurement)

    def __post_init__(self) -> None:
        if len(self.edges) < 2 or any(b <= a for a, b in zip(self.edges, self.edges[1:])):
            raise ValueError(f"edges must be at least two strictly increasing numbers, got {self.edges}")
        if len(self.repeats) != len(self.edges) - 1 or any(r < 0 for r in self.repeats):
            raise ValueError(f"repeats needs one count >= 0 per bucket ({len(self.edges) - 1}), got {self.repeats}")
        if self.prior is not None and not 0.0 <= self.prior <= 1.0:
            raise ValueError(f"prior must be in [0, 1] or null, got {self.prior}")
        if not 0.0 <= self.ema < 1.0:
            raise ValueError(f"ema must be in [0, 1), got {self.ema}")


def bucket_repeats(rates: Tensor, edges: Sequence[float], repeats: Sequence[int],
                   prior: float | None = 0.0) -> Tensor:
    """Copies per epoch of each prompt, [N] float (NaN = no rate) -> [N] long. Rates outside every bucket get 0;
    NaN takes ``prior`` (``None``: exactly 1 copy)."""
    filled = rates if prior is None else torch.where(torch.isnan(rates), torch.full_like(rates, prior), rates)
    out = torch.zeros(rates.shape, dtype=torch.long)
    for low, high, count in zip(edges, edges[1:], repeats):
        out[(filled >= low) & (filled < high)] = int(count)
    if prior is None:
        out[torch.isnan(rates)] = 1
    return out


def epoch_order(repeats: Tensor, seed: int, epoch: int, shuffle: bool = True) -> Tensor:
    """The epoch's list of rows: row i ``repeats[i]`` times, shuffled by a generator seeded from (seed, epoch), or
    (no shuffle) in rounds: every row with at least one copy, then every row with at least two, ..."""
    rows = torch.repeat_interleave(torch.arange(len(repeats)), repeats)
    if not shuffle:
        copy = torch.cat([torch.arange(int(r)) for r in repeats]) if len(rows) else rows
        return rows[torch.argsort(copy * len(repeats) + rows, stable=True)]
    gen = torch.Generator().manual_seed((seed * 1_000_003 + epoch * 7919 + 17) % (2**63 - 1))
    return rows[torch.randperm(len(rows), generator=gen)]


@register_sampler("pass_rate_buckets")
class PassRateBucketSampler(PromptSampler):
    """Prompts repeated by pass-rate bucket each epoch (module docstring). Offline rates need the dataset rows:
    pass ``rows=`` or call :meth:`attach_rows` before the first step."""

    Params = PassRateBucketParams
    params: PassRateBucketParams

    def __init__(self, params: PassRateBucketParams, size: int, prompts_per_step: int, seed: int,
                 shuffle: bool = True, rows: Sequence[dict[str, Any]] | None = None):
        super().__init__(params, size, prompts_per_step, seed, shuffle)
        self.observes = params.pass_rate_field is None  # online: the loop gathers every rank's rewards for us
        self.pass_rate = torch.full((size,), math.nan, dtype=torch.float64)  # NaN: no rate yet
        self.has_rows = False
        self.epoch_index, self.cursor, self.taken = -1, 0, 0
        self.order = torch.zeros(0, dtype=torch.long)
        if rows is not None:
            self.attach_rows(rows)

    @property
    def offline(self) -> bool:
        return self.params.pass_rate_field is not None

    def attach_rows(self, rows: Sequence[dict[str, Any]]) -> None:
        """Read the offline pass rates from the dataset rows (no-op when rates are measured online)."""
        name = self.params.pass_rate_field
        if name is None:
            return
        if len(rows) != self.size:
            raise ValueError(f"pass_rate_buckets: {len(rows)} rows for a dataset of {self.size}")
        if not any(name in row for row in rows):
            raise ValueError(f"pass_rate_buckets: no row has the column '{name}' (data.sampler.pass_rate_field; "
                             f"null measures pass rates online)")
        rates = []
        for index, row in enumerate(rows):
            value = row.get(name)
            if value is None:
                rates.append(math.nan)
                continue
            try:
                rate = float(value)
            except (TypeError, ValueError):
                rate = math.nan
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"pass_rate_buckets: row {index}: '{name}' must be a number in [0, 1], got {value!r}")
            rates.append(rate)
        self.pass_rate = torch.tensor(rates, dtype=torch.float64)
        self.has_rows = True
        if int(self.repeats().sum()) == 0:
            raise ValueError(f"pass_rate_buckets: every prompt's '{name}' lies outside the buckets "
                             f"{self.params.edges}: nothing to train on")

    def repeats(self) -> Tensor:
        """Copies per prompt that an epoch built now would hold, [size] long."""
        p = self.params
        return bucket_repeats(self.pass_rate, p.edges, p.repeats, p.prior)

    def _next_epoch(self) -> None:
        self.epoch_index += 1
        repeats = self.repeats()
        if int(repeats.sum()) == 0:  # online: every measured prompt is too easy now
            warnings.warn("pass_rate_buckets: every prompt's pass rate is outside the buckets; this epoch takes "
                          "each prompt once", stacklevel=3)
            repeats = torch.ones_like(repeats)
        self.order = epoch_order(repeats, self.seed, self.epoch_index, self.shuffle)
        self.cursor = 0

    def next_indices(self) -> list[int]:
        if self.offline and not self.has_rows:
            raise RuntimeError(f"pass_rate_buckets reads the offline column '{self.params.pass_rate_field}' from "
                               f"the dataset rows, but none were attached (set data.sampler.pass_rate_field: null "
                               f"to measure pass rates online)")
        picked: list[int] = []
        while len(picked) < self.per_step:
            if self.cursor >= len(self.order):
                self._next_epoch()
            take = min(self.per_step - len(picked), len(self.order) - self.cursor)
            picked.extend(self.order[self.cursor:self.cursor + take].tolist())
            self.cursor += take
        self.taken += 1
        return picked

    def observe(self, indices: list[int], rewards: Tensor) -> None:
        """Online rates: fraction of samples with reward > 0 per prompt (repeats in one step pooled)."""
        if not self.observes:
            return
        index = torch.as_tensor(indices, dtype=torch.long)
        passed = torch.zeros(self.size, dtype=torch.float64).index_add_(0, index, (rewards > 0).double().sum(-1))
        trials = torch.zeros(self.size, dtype=torch.float64).index_add_(
            0, index, torch.full((len(indices),), float(rewards.shape[-1]), dtype=torch.float64))
        seen = trials > 0
        measured = passed[seen] / trials[seen]
        old = self.pass_rate[seen]
        blended = self.params.ema * old + (1 - self.params.ema) * measured
        self.pass_rate[seen] = torch.where(torch.isnan(old), measured, blended)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch_index": self.epoch_index, "cursor": self.cursor, "taken": self.taken,
                "order": self.order.clone(), "pass_rate": self.pass_rate.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if len(state["pass_rate"]) != self.size:
            raise ValueError(f"pass_rate_buckets: saved state is for {len(state['pass_rate'])} prompts, the dataset "
                             f"has {self.size}")
        self.epoch_index, self.cursor = int(state["epoch_index"]), int(state["cursor"])
        self.taken = int(state["taken"])
        self.order = state["order"].clone().long()
        self.pass_rate = state["pass_rate"].clone().double()
        self.has_rows = self.has_rows or self.offline  # the rates come with the state

    @property
    def epoch(self) -> float:
        """Passes over the resampled list: completed epochs plus the share of the current one."""
        if self.epoch_index < 0 or len(self.order) == 0:
            return 0.0
        return self.epoch_index + self.cursor / len(self.order)
