"""Shared policy-gradient pieces: the PPO-style clipped surrogate, loss aggregation, and a clipped-PG base class.

Normalisation contract: the loop splits one optimiser step into micro-batches (and ranks) and *sums* the
micro-batch losses (the learner multiplies by world size to undo DDP's gradient mean). So :func:`aggregate`
always divides by the GLOBAL counts of the step (``PolicyInputs.num_tokens`` / ``num_sequences``), never by the
micro-batch's own; the sum over micro-batches then equals the full-batch loss, for every mode.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from alignrl.algorithms.base import Algorithm, PolicyInputs, masked_mean, masked_sum
from alignrl.algorithms.kl import KL_ESTIMATORS, KLEstimator, kl_clamp_fraction, kl_per_token

LossAggregation = Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm", "seq_mean_token_sum"]
LOSS_AGGREGATIONS: tuple[str, ...] = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm",
                                      "seq_mean_token_sum")
MAX_LOG_RATIO = 20.0  # |log pi/pi_old| is clamped to this before exp


def _f32(x: Tensor) -> Tensor:
    """Upcast to at least float32 (bf16 log-probs lose the small differences that ratios are made of)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _zero_masked(x: Tensor, mask: Tensor) -> Tensor:
    """Replace masked entries by 0 *before* any nonlinearity, so NaN/inf there cannot leak into gradients."""
    return torch.where(mask.bool(), x, torch.zeros_like(x))


def clipped_surrogate(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    eps_low: float,
    eps_high: float,
    max_log_ratio: float = MAX_LOG_RATIO,
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """PPO clipped surrogate per token: -min(r*A, clip(r, 1-eps_low, 1+eps_high)*A), r = exp(logp - old_logp).

    Args:
        logp: [B, T] current log-probs (requires grad); old_logp: [B, T] log-probs before the update (detached).
        advantages: [B] per-sample advantage, broadcast over tokens.
        eps_low, eps_high: clip range; eps_high > eps_low is DAPO's "clip-higher".
        max_log_ratio: the log-ratio is clamped to +-this before exp (overflow guard; zero gradient beyond).
        mask: optional [B, T]; masked entries give loss 0 and zero gradient whatever logp/old_logp hold there.
    Returns:
        (per_token_loss [B, T], clipped [B, T] bool: the clipped branch is active, so the token's gradient is 0).
    """
    if mask is not None:
        logp, old_logp = _zero_masked(logp, mask), _zero_masked(old_logp, mask)
    log_ratio = (_f32(logp) - _f32(old_logp)).clamp(-max_log_ratio, max_log_ratio)
    ratio = torch.exp(log_ratio)
    adv = _f32(advantages).detach().unsqueeze(-1)
    unclipped = ratio * adv
    clipped_obj = ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv
    loss = -torch.minimum(unclipped, clipped_obj)
    clipped = clipped_obj < unclipped
    if mask is not None:
        loss = _zero_masked(loss, mask)
        clipped = clipped & mask.bool()
    return loss, clipped


def aggregate(
    per_token: Tensor,
    mask: Tensor,
    mode: LossAggregation,
    num_tokens: float,
    num_sequences: float,
    max_tokens: int,
) -> Tensor:
    """Reduce a [B, T] per-token loss to this micro-batch's share of the step loss (a scalar).

    - ``"token_mean"`` (DAPO): sum over all tokens / global ``num_tokens``;
    - ``"seq_mean_token_mean"`` (original GRPO): mean over each sequence's tokens, summed / global ``num_sequences``;
    - ``"seq_mean_token_sum_norm"`` (Dr. GRPO): sum over all tokens / (global ``num_sequences`` * ``max_tokens``);
    - ``"seq_mean_token_sum"``: each sequence's token *sum*, averaged over sequences (a trajectory-level KL, as
      demonstration-regularised RL wants: a token mean would rescale its coefficient by 1/length).
    """
    if mode == "token_mean":
        denom = float(num_tokens)
        total = masked_sum(per_token, mask)
    elif mode == "seq_mean_token_mean":
        denom = float(num_sequences)
        total = masked_mean(per_token, mask, dim=-1).sum()
    elif mode == "seq_mean_token_sum_norm":
        denom = float(num_sequences) * float(max_tokens)
        total = masked_sum(per_token, mask)
    elif mode == "seq_mean_token_sum":
        denom = float(num_sequences)
        total = masked_sum(per_token, mask)
    else:
        raise ValueError(f"loss_aggregation must be one of {LOSS_AGGREGATIONS}, got {mode!r}")
    if not denom > 0:
        raise ValueError(
            f"aggregate({mode!r}): normaliser must be > 0 "
            f"(num_tokens={num_tokens}, num_sequences={num_sequences}, max_tokens={max_tokens})"
        )
    return total / denom


def check_group_rewards(rewards: Tensor, who: str) -> None:
    """Raise a clear ValueError unless ``rewards`` is a finite [P, K] tensor with K >= 2."""
    if rewards.dim() != 2:
        raise ValueError(f"{who}: rewards must be [P, K] (prompts x samples), got shape {tuple(rewards.shape)}")
    if rewards.shape[1] < 2:
        raise ValueError(f"{who}: needs at least 2 samples per prompt (group_size K >= 2), got K={rewards.shape[1]}")
    if not bool(torch.isfinite(rewards).all()):
        raise ValueError(f"{who}: rewards contain NaN/inf; score failures should map to a finite reward")


@torch.no_grad()
def group_metrics(rewards: Tensor, advantages: Tensor) -> dict[str, float]:
    """Logging metrics of a [P, K] reward batch and its advantages."""
    flat = rewards.double()
    return {
        "reward_mean": float(flat.mean()),
        "reward_std": float(flat.std()) if flat.numel() > 1 else 0.0,
        "frac_zero_std_groups": float((rewards == rewards[:, :1]).all(-1).double().mean()),
        "advantage_abs_mean": float(advantages.double().abs().mean()),
    }


@dataclass
class ClippedPGParams:
    """Hyperparameters shared by the clipped policy-gradient algorithms (GRPO, RLOO)."""

    clip_eps: float = 0.2  # lower clip: ratio >= 1 - clip_eps (and upper too unless clip_eps_high is set)
    clip_eps_high: float | None = None  # upper clip: ratio <= 1 + clip_eps_high (DAPO clip-higher); None = clip_eps
    loss_aggregation: LossAggregation = "token_mean"  # how per-token losses are normalised (see ``aggregate``)
    kl_coef: float = 0.0  # weight of the KL-to-reference loss term; > 0 makes the loop compute ref log-probs
    # k3: forward-KL gradient (TRL with use_bias_correction_kl off, OREAL); k2: reverse-KL gradient; k1: none;
    # exact: sum over the vocabulary from the logits (reverse KL, lowest variance; a reference forward per micro-batch)
    kl_estimator: KLEstimator | Literal["exact"] = "k3"
    kl_clamp: float = 20.0  # clamp |ref_logp - logp| before the KL estimator (overflow guard)
    kl_aggregation: LossAggregation | None = None  # None = loss_aggregation (TRL GRPO adds the KL per token)
    entropy_coef: float = 0.0  # weight of the entropy bonus (subtracted from the loss); needs entropy with grad
    entropy_aggregation: LossAggregation | None = None  # None = loss_aggregation
    # truncated importance sampling: weight tokens by min(pi_old / pi_sampler, tis_cap) to correct for the
    # engine/learner mismatch (vLLM vs the learner's kernels); 0 = off
    tis_cap: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 < self.clip_eps < 1.0:
            raise ValueError(f"clip_eps must be in (0, 1), got {self.clip_eps}")
        if self.clip_eps_high is not None and not self.clip_eps_high > 0.0:
            raise ValueError(f"clip_eps_high must be > 0 (or None to use clip_eps), got {self.clip_eps_high}")
        if self.loss_aggregation not in LOSS_AGGREGATIONS:
            raise ValueError(f"loss_aggregation must be one of {LOSS_AGGREGATIONS}, got {self.loss_aggregation!r}")
        if not self.kl_coef >= 0.0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_estimator not in (*KL_ESTIMATORS, "exact"):
            raise ValueError(f"kl_estimator must be one of {(*KL_ESTIMATORS, 'exact')}, got {self.kl_estimator!r}")
        for name in ("kl_aggregation", "entropy_aggregation"):
            if getattr(self, name) not in (None, *LOSS_AGGREGATIONS):
                raise ValueError(f"{name} must be null or one of {LOSS_AGGREGATIONS}, got {getattr(self, name)!r}")
        if self.tis_cap < 0:
            raise ValueError(f"tis_cap must be >= 0 (0 = off), got {self.tis_cap}")
        if not self.kl_clamp > 0.0:
            raise ValueError(f"kl_clamp must be > 0, got {self.kl_clamp}")
        if not self.entropy_coef >= 0.0:
            raise ValueError(f"entropy_coef must be >= 0, got {self.entropy_coef}")

    @property
    def eps_high(self) -> float:
        """The effective upper clip epsilon."""
        return self.clip_eps if self.clip_eps_high is None else self.clip_eps_high


class ClippedPGAlgorithm(Algorithm):
    """Clipped surrogate + optional KL and entropy terms; subclasses supply ``shape`` (the advantages).

    Loss = agg(token_weights * clipped surrogate) + kl_coef * agg_kl(KL) - entropy_coef * agg_ent(entropy); each
    term has its own aggregation (``kl_aggregation``/``entropy_aggregation``, default: ``loss_aggregation``).
    KL estimator gradients (design/algorithms.md §0): k3 -> grad KL(ref||pi) (forward; OREAL, and TRL GRPO's
    ``beta`` with ``use_bias_correction_kl=False``: TRL 1.16 turns that flag on by default, which multiplies k3 by
    the importance ratio and gives the reverse KL's gradient instead); k2 and exact -> grad KL(pi||ref) (reverse);
    k1 -> zero expected gradient as a loss term.
    """

    @property
    def needs_exact_kl(self) -> bool:
        return self.params.kl_coef > 0 and self.params.kl_estimator == "exact"


    params: ClippedPGParams

    @property
    def needs_reference(self) -> bool:
        return self.params.kl_coef > 0

    @property
    def needs_entropy(self) -> bool:
        """Whether the loop must pass ``PolicyInputs.entropy`` *with grad* (only with an entropy bonus)."""
        return self.params.entropy_coef > 0

    def loss(self, inputs: PolicyInputs) -> tuple[Tensor, dict[str, Tensor]]:
        """Scalar loss for one micro-batch (normalised by the step's global counts) and detached statistics.

        Stats are micro-batch means (average them over micro-batches to log): ``policy_loss`` (the aggregation
        evaluated with this micro-batch's own counts), ``clip_fraction`` (masked tokens whose clipped branch is
        active), ``ratio_mean``, ``ratio_max``; with ``ref_logp``: ``kl`` (mean per-token estimate),
        ``kl_clamp_fraction``; with ``entropy``: ``entropy``.
        """
        p, mask = self.params, inputs.mask
        if inputs.logp.shape != mask.shape or inputs.old_logp.shape != mask.shape:
            raise ValueError(f"logp {tuple(inputs.logp.shape)} / old_logp {tuple(inputs.old_logp.shape)} "
                             f"must match mask {tuple(mask.shape)}")
        if inputs.advantages.shape != mask.shape[:1]:
            raise ValueError(f"advantages must be [B]={tuple(mask.shape[:1])}, got {tuple(inputs.advantages.shape)}")
        agg = dict(mode=p.loss_aggregation, num_tokens=inputs.num_tokens, num_sequences=inputs.num_sequences,
                   max_tokens=inputs.max_tokens)
        local = dict(agg, num_tokens=max(float(mask.sum()), 1.0), num_sequences=max(mask.shape[0], 1))
        kl_agg = dict(agg, mode=p.kl_aggregation or p.loss_aggregation)
        ent_agg = dict(agg, mode=p.entropy_aggregation or p.loss_aggregation)

        per_tok, clipped = clipped_surrogate(
            inputs.logp, inputs.old_logp, inputs.advantages, p.clip_eps, p.eps_high, mask=mask
        )
        if inputs.token_weights is not None:
            per_tok = per_tok * _zero_masked(_f32(inputs.token_weights), mask)
        if p.tis_cap > 0 and inputs.sampler_logp is not None:
            tis = torch.exp(_zero_masked(_f32(inputs.old_logp) - _f32(inputs.sampler_logp), mask).clamp(max=20.0))
            per_tok = per_tok * tis.clamp(max=p.tis_cap).detach()
        policy_loss = aggregate(per_tok, mask, **agg)
        loss = policy_loss
        with torch.no_grad():
            log_ratio = _zero_masked(_f32(inputs.logp), mask) - _zero_masked(_f32(inputs.old_logp), mask)
            ratio = log_ratio.clamp(-MAX_LOG_RATIO, MAX_LOG_RATIO).exp()
            stats: dict[str, Tensor] = {
                "policy_loss": aggregate(per_tok.detach(), mask, **local),
                "clip_fraction": masked_mean(clipped.float(), mask),
                "ratio_mean": masked_mean(ratio, mask),
                "ratio_max": torch.where(mask.bool(), ratio, torch.zeros_like(ratio)).max(),
            }

        exact = p.kl_estimator == "exact"
        if p.kl_coef > 0 and (inputs.exact_kl if exact else inputs.ref_logp) is None:
            raise ValueError(f"kl_coef > 0 but PolicyInputs.{'exact_kl' if exact else 'ref_logp'} is None "
                             f"(the learner must compute it)")
        if exact and inputs.exact_kl is not None:
            kl_tok = _zero_masked(_f32(inputs.exact_kl), mask)
            if p.kl_coef > 0:
                loss = loss + p.kl_coef * aggregate(kl_tok, mask, **kl_agg)
            stats["kl"] = masked_mean(kl_tok.detach(), mask)
        elif inputs.ref_logp is not None:
            estimator = "k3" if exact else p.kl_estimator
            with torch.set_grad_enabled(p.kl_coef > 0 and torch.is_grad_enabled()):
                kl_tok = kl_per_token(inputs.logp, inputs.ref_logp, estimator, p.kl_clamp, mask=mask)
            if p.kl_coef > 0:
                loss = loss + p.kl_coef * aggregate(kl_tok, mask, **kl_agg)
            stats["kl"] = masked_mean(kl_tok.detach(), mask)
            stats["kl_clamp_fraction"] = kl_clamp_fraction(inputs.logp, inputs.ref_logp, mask, p.kl_clamp)

        if p.entropy_coef > 0 and inputs.entropy is None:
            raise ValueError("entropy_coef > 0 but PolicyInputs.entropy is None (the loop must pass entropy with grad)")
        if inputs.entropy is not None:
            ent = _zero_masked(_f32(inputs.entropy), mask)
            if p.entropy_coef > 0:
                loss = loss - p.entropy_coef * aggregate(ent, mask, **ent_agg)
            stats["entropy"] = masked_mean(ent.detach(), mask)
        return loss, stats
