"""Score completions with the recipe's reward functions: a weighted sum, each function's output checked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from alignrl.config.schema import RewardFunctionConfig
from alignrl.rewards.registry import RewardFn, call_reward, resolve_reward


@dataclass
class RewardTerm:
    name: str
    fn: RewardFn
    weight: float
    kwargs: dict[str, Any]


class RewardSet:
    """The recipe's reward functions, resolved once at start-up (so a bad name fails before training)."""

    def __init__(self, functions: list[RewardFunctionConfig]):
        if not functions:
            raise ValueError("reward.functions is empty: name at least one reward")
        self.terms = [RewardTerm(f.name, resolve_reward(f.name), f.weight, dict(f.kwargs)) for f in functions]

    def score(self, prompts: list[str], completions: list[str], rows: list[dict[str, Any]],
              finish_reasons: list[str], completion_ids: list[list[int]] | None = None,
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total weighted reward [B] and each function's raw scores [B]."""
        columns = columns_of(rows)
        parts = {}
        for term in self.terms:
            scores = call_reward(term.name, term.fn, prompts, completions, finish_reasons=finish_reasons,
                                 completion_ids=completion_ids, **columns, **term.kwargs)
            parts[term.name] = torch.tensor(scores, dtype=torch.float32)
        total = sum(term.weight * parts[term.name] for term in self.terms)
        return total, parts


def columns_of(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Row dicts -> one list per column (TRL's convention for reward keyword arguments)."""
    keys = {k for row in rows for k in row}
    reserved = {"prompts", "completions", "finish_reasons", "completion_ids"}
    return {k: [row.get(k) for row in rows] for k in sorted(keys - reserved)}
