"""The one batch type that flows between rollout, rewards, algorithm and learner.

Rows are samples, grouped by prompt: rows ``g*K .. g*K+K-1`` are the K samples of prompt ``g``. Prompt tokens
are left-padded and completion tokens right-padded, so completion position ``t`` is column ``t`` for every row.
Stages add fields (``rewards``, ``ref_logp``, ``advantages``...); none reaches into another's internals.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor

from alignrl.rollout.base import Completion


@dataclass
class RolloutBatch:
    prompt_ids: Tensor  # [B, P] left-padded prompt tokens
    prompt_mask: Tensor  # [B, P] 1 on real prompt tokens
    completion_ids: Tensor  # [B, T] right-padded completion tokens
    completion_mask: Tensor  # [B, T] 1.0 on completion tokens (EOS included)
    sampler_logp: Tensor  # [B, T] token log-probs reported by the rollout engine
    truncated: Tensor  # [B] bool: hit max_new_tokens without stopping
    group_size: int  # K
    prompts: list[str]  # [B] prompt text (repeated K times)
    completions: list[str]  # [B] completion text
    rows: list[dict[str, Any]]  # [B] the dataset row of each sample's prompt
    rewards: Tensor | None = None  # [B] weighted total reward
    reward_parts: dict[str, Tensor] = field(default_factory=dict)  # [B] per reward function, unweighted
    ref_logp: Tensor | None = None  # [B, T] frozen reference policy
    old_logp: Tensor | None = None  # [B, T] policy before this update (filled by the learner on the first pass)
    advantages: Tensor | None = None  # [B]
    keep: Tensor | None = None  # [B] bool: which samples enter the update
    group_ids: Tensor | None = None  # [B] group index of each row in this rank's batch (row // K at build time)
    token_weights: Tensor | None = None  # [B, T] from the algorithm's ``Shaped.token_weights``
    per_sample: dict[str, Tensor] = field(default_factory=dict)  # [B] extra per-sample tensors from ``shape``
    per_token: dict[str, Tensor] = field(default_factory=dict)  # [B, T] extra per-token tensors from ``shape``

    def __post_init__(self) -> None:
        if self.group_ids is None:
            self.group_ids = torch.arange(self.size) // self.group_size

    @property
    def size(self) -> int:
        return self.completion_ids.shape[0]

    @property
    def num_groups(self) -> int:
        return self.size // self.group_size

    def select(self, rows: Tensor | list[int]) -> "RolloutBatch":
        """A sub-batch of the given row indices, trimmed to its own padding width."""
        index = torch.as_tensor(rows, dtype=torch.long)
        picked = index.tolist()
        prompt_mask = self.prompt_mask[index]
        comp_mask = self.completion_mask[index]
        p_start = int((prompt_mask.sum(0) > 0).nonzero().min()) if prompt_mask.any() else 0
        t_end = int(comp_mask.sum(1).max()) if comp_mask.numel() else 0

        def cut(t: Tensor | None) -> Tensor | None:
            return None if t is None else t[index][:, :t_end]

        return replace(
            self, prompt_ids=self.prompt_ids[index][:, p_start:], prompt_mask=prompt_mask[:, p_start:],
            completion_ids=cut(self.completion_ids), completion_mask=cut(self.completion_mask),
            sampler_logp=cut(self.sampler_logp), truncated=self.truncated[index],
            prompts=[self.prompts[i] for i in picked], completions=[self.completions[i] for i in picked],
            rows=[self.rows[i] for i in picked],
            rewards=None if self.rewards is None else self.rewards[index],
            reward_parts={k: v[index] for k, v in self.reward_parts.items()},
            ref_logp=cut(self.ref_logp), old_logp=cut(self.old_logp),
            advantages=None if self.advantages is None else self.advantages[index],
            keep=None if self.keep is None else self.keep[index], group_ids=self.group_ids[index],
            token_weights=cut(self.token_weights), per_sample={k: v[index] for k, v in self.per_sample.items()},
            per_token={k: cut(v) for k, v in self.per_token.items()})

    def attach(self, shaped: Any) -> None:
        """Take an algorithm's :class:`~alignrl.algorithms.Shaped` onto the batch (flattened to rows)."""
        self.advantages, self.keep = shaped.advantages.flatten(), shaped.keep.flatten()
        self.token_weights = shaped.token_weights
        self.per_sample = {k: v.flatten() for k, v in shaped.per_sample.items()}
        self.per_token = dict(shaped.per_token)

    def kept_groups(self) -> list[list[int]]:
        """Row indices of the kept samples, one list per group that kept any (filters may leave fewer than K)."""
        keep = self.keep if self.keep is not None else torch.ones(self.size, dtype=torch.bool)
        groups: dict[int, list[int]] = {}
        for row in keep.nonzero().flatten().tolist():
            groups.setdefault(int(self.group_ids[row]), []).append(row)
        return list(groups.values())

    def micro_batches(self, micro_batch_size: int) -> list["RolloutBatch"]:
        """Micro-batches of whole (kept parts of) groups, packed *after* filtering: each holds at most
        ``micro_batch_size`` kept rows, or one group when a single group is larger. Dropped rows never appear."""
        out, rows = [], []
        for group in self.kept_groups():
            if rows and len(rows) + len(group) > micro_batch_size:
                out.append(self.select(rows))
                rows = []
            rows = rows + group
        if rows:
            out.append(self.select(rows))
        return out


def build_batch(prompt_ids: list[list[int]], completions: list[list[Completion]], prompts: list[str],
                rows: list[dict[str, Any]], pad_id: int) -> RolloutBatch:
    """Pack an engine's output (one list of K completions per prompt) into tensors."""
    group_size = len(completions[0])
    flat = [(p, c, text, row) for p, group, text, row in zip(prompt_ids, completions, prompts, rows) for c in group]
    if any(len(group) != group_size for group in completions):
        raise ValueError("every prompt must have the same number of completions")
    width_p = max(len(p) for p, *_ in flat)
    width_t = max(1, max(len(c.token_ids) for _, c, *_ in flat))
    batch = len(flat)
    prompt_tensor = torch.full((batch, width_p), pad_id, dtype=torch.long)
    prompt_mask = torch.zeros((batch, width_p), dtype=torch.long)
    comp_tensor = torch.full((batch, width_t), pad_id, dtype=torch.long)
    comp_mask = torch.zeros((batch, width_t), dtype=torch.float32)
    logp = torch.zeros((batch, width_t), dtype=torch.float32)
    for row, (p, c, _, _) in enumerate(flat):
        prompt_tensor[row, width_p - len(p):] = torch.tensor(p, dtype=torch.long)
        prompt_mask[row, width_p - len(p):] = 1
        n = len(c.token_ids)
        if n:
            comp_tensor[row, :n] = torch.tensor(c.token_ids, dtype=torch.long)
            comp_mask[row, :n] = 1.0
            logp[row, :n] = torch.tensor(c.logprobs, dtype=torch.float32)
    return RolloutBatch(
        prompt_ids=prompt_tensor, prompt_mask=prompt_mask, completion_ids=comp_tensor, completion_mask=comp_mask,
        sampler_logp=logp, truncated=torch.tensor([c.finish_reason == "length" for _, c, *_ in flat]),
        group_size=group_size, prompts=[t for _, _, t, _ in flat], completions=[c.text for _, c, *_ in flat],
        rows=[r for *_, r in flat])
