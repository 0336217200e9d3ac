"""Per-step metrics of the loop, reduced over ranks by their kind: extremes (``*_max``/``*_min``) by max/min,
everything else as a mean over ranks; reward statistics from the gathered rewards of all ranks."""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import gather_object

from alignrl.batch import RolloutBatch


def rollout_metrics(accelerator: Accelerator, batch: RolloutBatch, pass_term: str | None) -> dict[str, float]:
    """Reward mean/std over all ranks' samples (exact, not a mean of per-rank stds), pass rate, lengths."""
    rewards = accelerator.gather(batch.rewards.to(accelerator.device)).double().cpu()
    lengths = batch.completion_mask.sum(1)
    metrics = {"response_length": float(lengths.mean()), "truncated": float(batch.truncated.float().mean()),
               "completion_tokens": float(lengths.sum())}
    if pass_term is not None:
        metrics["pass_rate"] = float((batch.reward_parts[pass_term] > 0).float().mean())
    if len(batch.reward_parts) > 1:
        metrics.update({f"reward/{name}": float(v.mean()) for name, v in batch.reward_parts.items()})
    # identical on every rank, so the mean over ranks leaves them unchanged
    metrics.update(reward_mean=float(rewards.mean()), reward_std=float(rewards.std()) if rewards.numel() > 1 else 0.0,
                   response_length_max=float(lengths.max()))
    return metrics


def reduce_metrics(accelerator: Accelerator, metrics: dict[str, float]) -> dict[str, float]:
    """Reduce each metric over the ranks that report it, by its kind. Every rank must call this, but ranks may
    report different keys (a rank whose samples were all filtered out has no loss statistics)."""
    keys = sorted({k for keys in gather_object([sorted(metrics)]) for k in keys}) if accelerator.num_processes > 1 \
        else sorted(metrics)
    present = torch.tensor([k in metrics for k in keys], dtype=torch.float64)
    values = torch.tensor([float(metrics.get(k, 0.0)) for k in keys], dtype=torch.float64)
    is_max = torch.tensor([k.endswith("_max") for k in keys])
    is_min = torch.tensor([k.endswith("_min") for k in keys])
    inf = torch.tensor(float("inf"), dtype=torch.float64)
    high = torch.where(present.bool(), values, -inf)
    low = torch.where(present.bool(), -values, -inf)
    device = accelerator.device
    sums = accelerator.reduce(torch.stack([values * present, present]).to(device), reduction="sum").cpu()
    extremes = accelerator.reduce(torch.stack([high, low]).to(device), reduction="max").cpu()
    reduced = torch.where(is_max, extremes[0], torch.where(is_min, -extremes[1], sums[0] / sums[1].clamp(min=1)))
    return dict(zip(keys, reduced.tolist()))
