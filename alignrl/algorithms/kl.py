"""Per-token KL estimators between the current policy and a frozen reference (design/algorithms.md §0).

With d = ref_logp - logp evaluated on tokens sampled from the policy pi:

- ``k1 = -d``: unbiased for KL(pi||ref); as a *loss* term its expected gradient is 0 (only useful in the reward);
- ``k2 = d^2 / 2``: biased value; as a loss its expected gradient is grad KL(pi||ref) (reverse KL);
- ``k3 = exp(d) - d - 1 >= 0``: unbiased value; as a loss its expected gradient is grad KL(ref||pi) (forward KL).
  OREAL (``kl_type="unbias"``) uses k3, and so does TRL's GRPO ``beta`` with ``use_bias_correction_kl=False``.
  TRL 1.16 turns that flag on by default: it multiplies k3 by the importance ratio pi/pi_old, which adds the
  score-function term and gives the reverse KL's gradient, so alignrl's k3 equals TRL only with the flag off.

:func:`exact_kl_per_token` sums over the vocabulary instead: lowest variance and the true reverse-KL gradient.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor

from alignrl.algorithms.base import masked_mean

KLEstimator = Literal["k1", "k2", "k3"]
KL_ESTIMATORS: tuple[str, ...] = ("k1", "k2", "k3")


def _log_ratio(logp: Tensor, ref_logp: Tensor, clamp: float | None, mask: Tensor | None) -> Tensor:
    """d = ref_logp - logp, masked entries replaced by 0 (so NaN/inf there reach neither value nor gradient)."""
    if mask is not None:
        valid = mask.bool()
        logp = torch.where(valid, logp, torch.zeros_like(logp))
        ref_logp = torch.where(valid, ref_logp, torch.zeros_like(ref_logp))
    d = ref_logp - logp
    if clamp is not None:
        d = d.clamp(-clamp, clamp)
    return d


def kl_per_token(
    logp: Tensor,
    ref_logp: Tensor,
    estimator: KLEstimator = "k3",
    clamp: float | None = 20.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Per-token KL estimate, [B, T] -> [B, T].

    Args:
        logp: [B, T] log-probs of the sampled tokens under the current policy (may require grad).
        ref_logp: [B, T] log-probs of the same tokens under the reference policy.
        estimator: ``"k1"``, ``"k2"`` or ``"k3"`` (see the module docstring for what gradient each gives).
        clamp: clamp |d| to this value before the estimator (avoids exp overflow; clamped tokens get zero
            gradient); ``None`` disables it. Use :func:`kl_clamp_fraction` to log how often it triggers.
        mask: optional [B, T]; where 0 the output is exactly 0 with exactly zero gradient, whatever the inputs.
    """
    d = _log_ratio(logp, ref_logp, clamp, mask)
    if estimator == "k1":
        out = -d
    elif estimator == "k2":
        out = 0.5 * d * d
    elif estimator == "k3":
        out = torch.expm1(d) - d  # exp(d) - 1 - d, accurate near d = 0
    else:
        raise ValueError(f"kl estimator must be one of {KL_ESTIMATORS}, got {estimator!r}")
    if mask is not None:
        out = torch.where(mask.bool(), out, torch.zeros_like(out))
    return out


@torch.no_grad()
def kl_clamp_fraction(logp: Tensor, ref_logp: Tensor, mask: Tensor, clamp: float | None = 20.0) -> Tensor:
    """Fraction of masked tokens where |ref_logp - logp| exceeds ``clamp`` (scalar; 0 when ``clamp`` is None)."""
    if clamp is None:
        return torch.zeros((), device=logp.device)
    d = _log_ratio(logp, ref_logp, None, mask)
    return masked_mean((d.abs() > clamp).float(), mask)


def exact_kl_per_token(logits: Tensor, ref_logits: Tensor, mask: Tensor) -> Tensor:
    """Exact per-token KL(pi||ref) = sum_v pi(v) (log pi(v) - log ref(v)).

    Args:
        logits: [B, T, V] policy logits at the positions that predict the completion tokens (may require grad).
        ref_logits: [B, T, V] reference logits at the same positions.
        mask: [B, T]; masked positions give exactly 0 (with zero gradient).
    Returns:
        [B, T] per-token KL, >= 0 up to rounding. Computed in float32 at least.
    """
    dtype = torch.promote_types(logits.dtype, torch.float32)
    valid = mask.bool().unsqueeze(-1)
    logits = torch.where(valid, logits.to(dtype), torch.zeros((), dtype=dtype, device=logits.device))
    ref_logits = torch.where(valid, ref_logits.to(dtype), torch.zeros((), dtype=dtype, device=logits.device))
    logp = torch.log_softmax(logits, dim=-1)
    ref_logp = torch.log_softmax(ref_logits, dim=-1)
    p = logp.exp()
    # 0 * log(0 / q) = 0: tokens the policy gives zero mass (e.g. -inf logits) contribute nothing, not NaN
    kl = (p * torch.where(p > 0, logp - ref_logp, torch.zeros_like(logp))).sum(-1)
    return torch.where(mask.bool(), kl, torch.zeros_like(kl))
