"""P3O (Wu et al. 2023, arXiv 2310.00212): Pairwise Proximal Policy Optimization, trajectory-wise and pairwise.

For two samples y_i, y_j of one prompt with trajectory rewards r (the KL to the reference folded in, as in
PPO-RLHF: r = reward - beta * sum_t k1_t), only Delta = r_i - r_j is used, so the update is invariant to any
per-prompt reward shift r -> r + c(x). The pairwise policy gradient is E[Delta/2 (grad S_i - grad S_j)] with
S = sum_t log pi; off-policy it is made proximal with trajectory-wise ratios rho = exp(S - S_old) (full sums, no
length normalisation) clipped like PPO:

- ``"sep"`` (V1): 1/2 [min(rho_i D, clip(rho_i) D) + min(-rho_j D, -clip(rho_j) D)];
- ``"joint"`` (V2): the ratio of ratios R = rho_i/rho_j, 1/2 min(R D, clip(R) D), averaged over the two orders of
  the pair (see :func:`p3o_pair_loss`: the one-order form is not swap-symmetric).

K > 2 samples per prompt (an extension, not in the paper) average over all K(K-1)/2 pairs of a group; the loss
divides by the step's GLOBAL pair count (``counts()["pairs"]``), so it does not depend on how groups are split
over micro-batches and ranks. On-policy (rho = 1) the gradient equals RLOO's with a per-sequence token *sum*
(``loss_aggregation="seq_mean_token_sum"``), and K/(K-1) times unscaled GRPO's (2x for K = 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from alignrl.algorithms.base import (
    Algorithm,
    CountInputs,
    PolicyInputs,
    Shaped,
    ShapingInputs,
    masked_sum,
    register_algorithm,
)
from alignrl.algorithms.kl import kl_clamp_fraction, kl_per_token
from alignrl.algorithms.policy_gradient import check_group_rewards, group_metrics

P3OVariant = Literal["sep", "joint"]
DeltaScale = Literal["none", "batch_std"]
VARIANTS: tuple[str, ...] = ("sep", "joint")
DELTA_SCALES: tuple[str, ...] = ("none", "batch_std")
SHAPED_REWARD = "shaped_reward"  # Shaped.per_sample key of the KL-shaped trajectory reward
DELTA_SCALE_FLOOR = 1e-6  # batch_std: Delta is divided by max(rms(Delta), this)


def _f32(x: Tensor) -> Tensor:
    """Upcast to at least float32."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _zero_masked(x: Tensor, mask: Tensor) -> Tensor:
    """Masked entries -> 0 before any arithmetic, so NaN/inf there reach neither values nor gradients."""
    return torch.where(mask.bool(), x, torch.zeros_like(x))


def pair_indices(group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """All pairs (i < j) of rows in the same group: two [N_pairs] long tensors, row-major order.

    Rows of a group need not be consecutive. Cost is O(B^2) booleans, fine for a micro-batch.
    """
    g = group_ids.reshape(-1)
    same = g[:, None] == g[None, :]
    i, j = torch.triu(same, diagonal=1).nonzero(as_tuple=True)
    return i, j


def num_pairs(group_ids: Tensor) -> int:
    """Sum over groups of k(k-1)/2, k = rows of the group present in ``group_ids``."""
    if group_ids.numel() == 0:
        return 0
    _, k = torch.unique(group_ids.reshape(-1), return_counts=True)
    return int((k * (k - 1) // 2).sum())


def sequence_kl(logp: Tensor, ref_logp: Tensor, mask: Tensor, clamp: float | None = 20.0) -> Tensor:
    """Trajectory k1 KL, [B, T] -> [B]: sum_t mask * clamp(logp - ref_logp, +-clamp), float32 at least."""
    return masked_sum(kl_per_token(_f32(logp), _f32(ref_logp), "k1", clamp, mask=mask), mask, dim=-1)


def trajectory_kl_reward(rewards: Tensor, logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float,
                         clamp: float | None = 20.0) -> Tensor:
    """KL-shaped trajectory reward r = reward - beta * sum_t k1_t, evaluated on the samples.

    Args:
        rewards: [P, K] (or [B]) scalar rewards; logp, ref_logp, mask: [P*K, T] (or [B, T]) sampling-policy and
            reference log-probs of the sampled tokens and the completion mask.
        beta: KL coefficient; clamp: per-token |logp - ref_logp| bound (None = no clamp).
    Returns:
        Same shape as ``rewards``, at least float32.
    """
    kl = sequence_kl(logp, ref_logp, mask, clamp).reshape(rewards.shape)
    return _f32(rewards) - beta * kl


def sequence_log_ratio(logp: Tensor, old_logp: Tensor, mask: Tensor, max_log_ratio: float = 20.0) -> Tensor:
    """log rho = S - S_old = sum_t mask * (logp - old_logp), [B, T] -> [B], float32 at least, clamped to
    +-max_log_ratio (beyond it the row gets zero gradient, and exp cannot overflow)."""
    diff = _zero_masked(_f32(logp), mask) - _zero_masked(_f32(old_logp), mask)
    return masked_sum(diff, mask, dim=-1).clamp(-max_log_ratio, max_log_ratio)


def _clipped_min(ratio: Tensor, adv: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """PPO's min(ratio * adv, clip(ratio) * adv) and whether the clipped branch is active (zero gradient)."""
    unclipped = ratio * adv
    clipped = ratio.clamp(1.0 - eps, 1.0 + eps) * adv
    return torch.minimum(unclipped, clipped), clipped < unclipped


def p3o_pair_loss(log_ratio_i: Tensor, log_ratio_j: Tensor, delta: Tensor, eps: float = 0.2,
                  variant: P3OVariant = "sep") -> tuple[Tensor, Tensor]:
    """Per-pair P3O objective (to MAXIMISE) for pairs (i, j) with Delta = r_i - r_j.

    ``"sep"`` (V1): 1/2 [min(rho_i D, clip(rho_i) D) + min(-rho_j D, -clip(rho_j) D)].
    ``"joint"`` (V2): with R = rho_i / rho_j = exp(log_ratio_i - log_ratio_j),
    1/4 [min(R D, clip(R) D) + min(-D/R, -clip(1/R) D)], i.e. the spec's 1/2 min(R D, clip(R) D) averaged over
    both orders (i, j) and (j, i). The one-order form is not swap-symmetric (its value and, off rho = 1, its
    gradient depend on which sample is called y1); with y1, y2 drawn i.i.d. its expectation is this average.
    Both variants have gradient D/2 (grad S_i - grad S_j) at rho = 1, and are exactly symmetric under
    (i, D) <-> (j, -D).

    Args:
        log_ratio_i, log_ratio_j: [N] trajectory log-ratios S - S_old (already clamped; may require grad).
        delta: [N] reward differences (detached here). eps: clip range [1 - eps, 1 + eps].
    Returns:
        (objective [N], clipped [N]: fraction of the pair's two terms whose clipped branch is active).
    """
    d = _f32(delta).detach()
    lr_i, lr_j = _f32(log_ratio_i), _f32(log_ratio_j)
    if variant == "sep":
        a, a_clip = _clipped_min(torch.exp(lr_i), d, eps)
        b, b_clip = _clipped_min(torch.exp(lr_j), -d, eps)
        return 0.5 * (a + b), 0.5 * (a_clip.to(d.dtype) + b_clip.to(d.dtype))
    if variant == "joint":
        log_r = lr_i - lr_j
        a, a_clip = _clipped_min(torch.exp(log_r), d, eps)
        b, b_clip = _clipped_min(torch.exp(-log_r), -d, eps)
        return 0.25 * (a + b), 0.5 * (a_clip.to(d.dtype) + b_clip.to(d.dtype))
    raise ValueError(f"P3O variant must be one of {VARIANTS}, got {variant!r}")


@dataclass
class P3OParams:
    """P3O hyperparameters."""

    variant: P3OVariant = "sep"  # "sep" = V1 separate clipping, "joint" = V2 clipped ratio of ratios
    clip_eps: float = 0.2  # trajectory ratio clip range [1 - eps, 1 + eps]
    kl_coef: float = 0.0  # beta of the KL folded into the trajectory reward (> 0 needs reference log-probs)
    kl_clamp: float = 20.0  # per-token |sampler_logp - ref_logp| bound in the KL reward
    max_log_ratio: float = 20.0  # |S - S_old| bound before exp (overflow guard)
    delta_scale: DeltaScale = "none"  # "batch_std": divide Delta by its RMS over all pairs of the step

    def __post_init__(self) -> None:
        if self.variant not in VARIANTS:
            raise ValueError(f"p3o variant must be one of {VARIANTS} (sep = V1, joint = V2), got {self.variant!r}")
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if not 0.0 <= self.kl_coef < float("inf"):
            raise ValueError(f"kl_coef must be a finite number >= 0, got {self.kl_coef}")
        if not self.kl_clamp > 0.0:
            raise ValueError(f"kl_clamp must be > 0, got {self.kl_clamp}")
        if not 0.0 < self.max_log_ratio <= 80.0:
            raise ValueError(f"max_log_ratio must be in (0, 80] (exp must not overflow), got {self.max_log_ratio}")
        if self.delta_scale not in DELTA_SCALES:
            raise ValueError(f"delta_scale must be one of {DELTA_SCALES}, got {self.delta_scale!r}")


@register_algorithm("p3o")
class P3O(Algorithm):
    """Pairwise trajectory-ratio clipped surrogate; no value network, no token-level advantages.

    ``shape`` folds the KL into the reward (``per_sample["shaped_reward"]``) and keeps every sample; ``counts``
    gives the global pair count (and, with ``delta_scale="batch_std"``, the global sum of Delta^2); ``loss`` is
    -sum over this micro-batch's pairs of the P3O objective / global pairs.
    """

    Params = P3OParams
    params: P3OParams

    @property
    def needs_reference(self) -> bool:
        return self.params.kl_coef > 0

    def shape(self, inputs: ShapingInputs) -> Shaped:
        """Shaped rewards r = reward - beta * KL_seq, pairwise advantages (mean over partners of (r_i - r_j)/2)
        for logging, and metrics. Every sample is kept: truncation must be penalised by the reward itself."""
        p = self.params
        check_group_rewards(inputs.rewards, "P3O.shape")
        n_prompts, k = inputs.rewards.shape
        if inputs.mask.shape[0] != n_prompts * k:
            raise ValueError(f"P3O.shape: mask has {inputs.mask.shape[0]} rows, rewards {n_prompts}x{k}")
        if p.kl_coef > 0 and inputs.ref_logp is None:
            raise ValueError("P3O: kl_coef > 0 but ShapingInputs.ref_logp is None (the loop must compute it)")
        metrics: dict[str, float] = {}
        rewards = _f32(inputs.rewards)
        if inputs.ref_logp is not None:
            kl = sequence_kl(inputs.sampler_logp, inputs.ref_logp, inputs.mask, p.kl_clamp).reshape(n_prompts, k)
            if p.kl_coef > 0:
                rewards = rewards - p.kl_coef * kl
            metrics["kl_seq_mean"] = float(kl.double().mean())
            metrics["kl_clamp_fraction"] = float(
                kl_clamp_fraction(_f32(inputs.sampler_logp), _f32(inputs.ref_logp), inputs.mask, p.kl_clamp))
        diff = rewards[:, :, None] - rewards[:, None, :]  # [P, K, K]: r_i - r_j
        advantages = diff.sum(-1) / (2 * (k - 1))
        upper = torch.triu(torch.ones(k, k, dtype=torch.bool), diagonal=1)
        deltas = diff[:, upper].double()  # [P, K(K-1)/2]
        metrics.update(group_metrics(inputs.rewards, advantages))
        metrics.update({
            "shaped_reward_mean": float(rewards.double().mean()),
            "delta_abs_mean": float(deltas.abs().mean()),
            "delta_rms": float(deltas.square().mean().sqrt()),
            "tie_fraction": float((deltas == 0).double().mean()),
        })
        if inputs.truncated is not None:
            metrics["truncated_fraction"] = float(inputs.truncated.double().mean())
        keep = torch.ones_like(inputs.rewards, dtype=torch.bool)
        return Shaped(advantages=advantages, keep=keep, metrics=metrics, per_sample={SHAPED_REWARD: rewards})

    def _shaped(self, per_sample: dict[str, Tensor], who: str) -> Tensor:
        if SHAPED_REWARD not in per_sample:
            raise ValueError(f"P3O.{who} needs per_sample['{SHAPED_REWARD}'] (set by P3O.shape)")
        return _f32(per_sample[SHAPED_REWARD]).detach()

    def counts(self, inputs: CountInputs) -> dict[str, Tensor]:
        """``pairs``: sum over groups of k(k-1)/2; with ``delta_scale="batch_std"`` also ``delta_sq`` = sum of
        Delta^2 over those pairs. Summed over micro-batches and ranks by the learner before any loss."""
        out = {"pairs": torch.tensor(float(num_pairs(inputs.group_ids)), dtype=torch.float64)}
        if self.params.delta_scale == "batch_std":
            r = self._shaped(inputs.per_sample, "counts").double()
            i, j = pair_indices(inputs.group_ids)
            out["delta_sq"] = (r[i] - r[j]).square().sum()
        return out

    def loss(self, inputs: PolicyInputs) -> tuple[Tensor, dict[str, Tensor]]:
        """-(sum over this micro-batch's pairs of the P3O objective) / global pairs, and detached stats.

        Stats: ``policy_loss`` (this micro-batch's own pair mean), ``clip_fraction`` (pair terms on the clipped
        branch), ``ratio_mean`` / ``ratio_max`` (trajectory ratios), ``log_ratio_clamp_fraction``,
        ``delta_abs_mean`` (after ``delta_scale``).
        """
        p, mask = self.params, inputs.mask
        if inputs.logp.shape != mask.shape or inputs.old_logp.shape != mask.shape:
            raise ValueError(f"logp {tuple(inputs.logp.shape)} / old_logp {tuple(inputs.old_logp.shape)} "
                             f"must match mask {tuple(mask.shape)}")
        if inputs.group_ids is None or inputs.group_ids.shape != mask.shape[:1]:
            raise ValueError("P3O.loss needs PolicyInputs.group_ids of shape [B] (pairs are formed within groups)")
        rewards = self._shaped(inputs.per_sample, "loss")
        if rewards.shape != mask.shape[:1]:
            raise ValueError(f"per_sample['{SHAPED_REWARD}'] must be [B]={tuple(mask.shape[:1])}, "
                             f"got {tuple(rewards.shape)}")
        total = float(inputs.counts.get("pairs", 0.0))
        i, j = pair_indices(inputs.group_ids)
        if i.numel() > 0 and not total >= i.numel():
            raise ValueError(f"P3O.loss: global pair count counts['pairs']={total} is below this micro-batch's "
                             f"{i.numel()} pairs (the learner must sum P3O.counts over all micro-batches)")
        delta = rewards[i] - rewards[j]
        if p.delta_scale == "batch_std":
            rms = (float(inputs.counts.get("delta_sq", 0.0)) / max(total, 1.0)) ** 0.5
            delta = delta / max(rms, DELTA_SCALE_FLOOR)
        log_ratio = sequence_log_ratio(inputs.logp, inputs.old_logp, mask, p.max_log_ratio)
        objective, clipped = p3o_pair_loss(log_ratio[i], log_ratio[j], delta, p.clip_eps, p.variant)
        loss = -objective.sum() / max(total, 1.0)
        with torch.no_grad():
            n = max(i.numel(), 1)
            ratio = log_ratio.detach().exp()
            stats = {
                "policy_loss": -objective.detach().sum() / n,
                "clip_fraction": clipped.sum() / n,
                "ratio_mean": ratio.mean(),
                "ratio_max": ratio.max(),
                "log_ratio_clamp_fraction": (log_ratio.detach().abs() >= p.max_log_ratio).to(ratio.dtype).mean(),
                "delta_abs_mean": delta.abs().sum() / n,
            }
        return loss, stats
