"""The recipe's rewards as one :class:`RewardSet`: built at start-up, set up once, scored per batch as a weighted
sum (each term's output checked), saved and restored with every checkpoint, closed at the end."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

import torch

from alignrl.config.schema import RewardFunctionConfig
from alignrl.rewards.base import (Reward, RewardContext, RewardInputs, build_reward, columns_of,  # noqa: F401
                                  run_reward)
from alignrl.rewards.registry import RewardError


@dataclass
class RewardTerm:
    """One entry of ``reward.functions``: its name, weight, recipe kwargs and the instantiated reward."""

    name: str
    weight: float
    reward: Reward
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class ScoredBatch:
    """``total`` [B]: weighted sum of the terms that ran; ``parts``: each such term's raw scores [B];
    ``info``: ``"{term}/{key}"`` -> mean of that term's per-sample info values."""

    total: torch.Tensor
    parts: dict[str, torch.Tensor]
    info: dict[str, float]


class RewardSet:
    """The recipe's rewards, resolved and instantiated at construction (a bad name or kwargs fail here)."""

    def __init__(self, functions: list[RewardFunctionConfig]):
        if not functions:
            raise ValueError("reward.functions is empty: name at least one reward")
        names = [f.name for f in functions]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise RewardError(f"reward '{twice[0]}' appears more than once in reward.functions; its scores, info "
                              f"and checkpoint state are keyed by name (wrap it under another name)")
        if all(f.weight == 0 for f in functions):
            raise ValueError("every reward in reward.functions has weight 0: nothing would be trained on")
        self.terms = [RewardTerm(f.name, float(f.weight), build_reward(f.name, f.kwargs), dict(f.kwargs))
                      for f in functions]
        self.context: RewardContext | None = None
        self._closed = False

    @property
    def names(self) -> list[str]:
        return [t.name for t in self.terms]

    def term(self, name: str) -> RewardTerm:
        """The term called ``name``; a :class:`RewardError` listing the terms otherwise."""
        for t in self.terms:
            if t.name == name:
                return t
        raise RewardError(f"no reward '{name}' in reward.functions; terms: {', '.join(self.names)}")

    def setup(self, context: RewardContext) -> None:
        """Give every reward the context (once, before the first score)."""
        self.context = context
        for t in self.terms:
            try:
                t.reward.setup(context)
            except RewardError:
                raise
            except Exception as err:
                raise RewardError(f"reward '{t.name}' setup failed: {type(err).__name__}: {err}") from err

    def score(self, inputs: RewardInputs, only: list[str] | None = None) -> ScoredBatch:
        """Score ``inputs`` with the terms of non-zero weight, or exactly the terms named in ``only``."""
        if only is not None:
            wanted = set(only)
            for name in wanted:
                self.term(name)  # an unknown name fails with the list of terms
            running = [t for t in self.terms if t.name in wanted]
        else:
            running = [t for t in self.terms if t.weight != 0]
        total = torch.zeros(len(inputs), dtype=torch.float32)
        parts: dict[str, torch.Tensor] = {}
        info: dict[str, float] = {}
        for t in running:
            output = run_reward(t.name, t.reward, inputs)
            parts[t.name] = torch.tensor(output.scores, dtype=torch.float32)
            total += t.weight * parts[t.name]
            info.update({f"{t.name}/{k}": sum(v) / len(v) for k, v in output.info.items() if v})
        return ScoredBatch(total, parts, info)

    def state_dict(self) -> dict[str, dict]:
        """Each reward's state by term name (saved in every checkpoint)."""
        return {t.name: t.reward.state_dict() for t in self.terms}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        """Restore each term's state; a term absent from ``state`` keeps its fresh state (it was added since)."""
        unknown = sorted(set(state) - set(self.names))
        if unknown:
            warnings.warn(f"reward state for {unknown} is ignored: no such term in reward.functions", stacklevel=2)
        for t in self.terms:
            if t.name in state:
                try:
                    t.reward.load_state_dict(state[t.name])
                except RewardError:
                    raise
                except Exception as err:
                    raise RewardError(f"reward '{t.name}': cannot load its checkpoint state: "
                                      f"{type(err).__name__}: {err}") from err

    def describe(self) -> list[dict[str, Any]]:
        """One JSON-able entry per term: name, weight, kwargs and the reward's own ``describe()``."""
        return [{"name": t.name, "weight": t.weight, "kwargs": t.kwargs, "reward": t.reward.describe()}
                for t in self.terms]

    def close(self) -> None:
        """Close every reward (all of them, even when one fails; the first error is raised after)."""
        if self._closed:
            return
        self._closed = True
        first: BaseException | None = None
        for t in self.terms:
            try:
                t.reward.close()
            except Exception as err:  # noqa: BLE001  (keep closing the others)
                first = first or RewardError(f"reward '{t.name}' close failed: {type(err).__name__}: {err}")
        if first is not None:
            raise first

    def __enter__(self) -> RewardSet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
