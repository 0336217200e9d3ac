"""Forward passes over a rollout batch: completion-token logits, log-probs, entropy and scalar-head scores.

Every output is aligned with the completion tokens: column ``t`` is read at the position that *predicts*
completion token ``t`` (the last prompt position for ``t = 0``), so it sees only the prompt and earlier tokens.
"""

from __future__ import annotations

import torch
from torch import Tensor

from collections.abc import Callable

from alignrl.batch import RolloutBatch


def _forward(model: torch.nn.Module, batch: RolloutBatch) -> Tensor:
    """Raw head outputs [B, T, H] at the positions predicting the completion tokens."""
    input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)
    attention = torch.cat([batch.prompt_mask, batch.completion_mask.long()], dim=1)
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    width = batch.completion_ids.shape[1]
    device = next(model.parameters()).device
    out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                position_ids=positions.to(device), logits_to_keep=width + 1, use_cache=False)
    return out.logits[:, :-1]


def completion_logits(model: torch.nn.Module, batch: RolloutBatch, temperature: float) -> Tensor:
    """[B, T, V] float32 logits divided by the sampling temperature (none for greedy or T = 1)."""
    logits = _forward(model, batch).float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    return logits


def logprobs_from_logits(logits: Tensor, tokens: Tensor, with_entropy: bool = False,
                         entropy_grad: bool = False) -> tuple[Tensor, Tensor | None]:
    """Gathered token log-probs [B, T] (and entropy [B, T]) from tempered logits [B, T, V]."""
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, tokens.to(logits.device)[..., None]).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def token_logprobs(model: torch.nn.Module, batch: RolloutBatch, temperature: float, with_entropy: bool = False,
                   entropy_grad: bool = False) -> tuple[Tensor, Tensor | None]:
    """Log-probs [B, T] of the completion tokens under ``model`` at the sampling temperature (and entropy)."""
    return logprobs_from_logits(completion_logits(model, batch, temperature), batch.completion_ids, with_entropy,
                                entropy_grad)


def token_scores(model: torch.nn.Module, batch: RolloutBatch) -> Tensor:
    """[B, T] outputs of a one-output (scalar) head, e.g. a token-level reward model."""
    return _forward(model, batch).float().squeeze(-1)


@torch.no_grad()
def chunked(batch: RolloutBatch, micro_batch_size: int, fn: Callable[[RolloutBatch], Tensor]) -> Tensor:
    """``fn`` ([B', T'] per chunk) over chunks of whole groups of ``batch``, assembled into [B, T] on the CPU."""
    out = torch.zeros_like(batch.sampler_logp)
    rows_per = max(1, micro_batch_size // batch.group_size) * batch.group_size
    for start in range(0, batch.size, rows_per):
        sub = batch.select(list(range(start, min(batch.size, start + rows_per))))
        values = fn(sub).float().cpu()
        out[start:start + sub.size, :values.shape[1]] = values
    return out
