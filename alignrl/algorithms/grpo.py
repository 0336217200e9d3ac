"""GRPO (Shao et al. 2024, DeepSeekMath): group-normalised advantages + PPO clipped surrogate, no value network.

Variants by parameter: ``scale_rewards=False`` and ``loss_aggregation="seq_mean_token_sum_norm"`` give Dr. GRPO;
``clip_eps_high > clip_eps`` and ``"token_mean"`` give DAPO's clip-higher / token-level loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from alignrl.algorithms.base import Shaped, ShapingInputs, register_algorithm
from alignrl.algorithms.policy_gradient import ClippedPGAlgorithm, ClippedPGParams, check_group_rewards, group_metrics


def group_advantages(rewards: Tensor, scale: bool = True, eps: float = 1e-4) -> Tensor:
    """Group-relative advantages, [P, K] -> [P, K]: (r - mean_group) / (std_group + eps), or r - mean if not scale.

    The std is the *unbiased* one (torch.std's default, divisor K-1), as in TRL's GRPOTrainer; eps = 1e-4 is
    TRL's too. A group whose rewards are all equal gets exactly 0 (no NaN, no rounding residue / eps).
    """
    check_group_rewards(rewards, "group_advantages")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    centered = r - r.mean(dim=-1, keepdim=True)
    constant = (rewards == rewards[:, :1]).all(dim=-1, keepdim=True)
    centered = torch.where(constant, torch.zeros_like(centered), centered)
    if scale:
        centered = centered / (r.std(dim=-1, keepdim=True) + eps)
    return centered


@dataclass
class GRPOParams(ClippedPGParams):
    """GRPO hyperparameters: the shared clipped-PG fields (see :class:`ClippedPGParams`) plus reward scaling."""

    scale_rewards: bool = True  # divide group-centred rewards by the group std (False = Dr. GRPO)


@register_algorithm("grpo")
class GRPO(ClippedPGAlgorithm):
    """Group-normalised advantages; loss, KL and entropy terms from :class:`ClippedPGAlgorithm`.

    KL (``kl_coef > 0``): k3 (default; OREAL, and TRL's ``beta`` with ``use_bias_correction_kl=False``, which TRL
    1.16 turns on by default) has the forward-KL gradient grad KL(ref||pi);
    k2 has the reverse-KL gradient grad KL(pi||ref); k1 has zero expected gradient as a loss term.
    """

    Params = GRPOParams
    params: GRPOParams

    def shape(self, inputs: ShapingInputs) -> Shaped:
        """Advantages [P, K] from the rewards; every sample is kept."""
        adv = group_advantages(inputs.rewards, scale=self.params.scale_rewards)
        keep = torch.ones_like(inputs.rewards, dtype=torch.bool)
        return Shaped(advantages=adv, keep=keep, metrics=group_metrics(inputs.rewards, adv))
