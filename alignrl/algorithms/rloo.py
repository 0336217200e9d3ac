"""RLOO (Ahmadian et al. 2024, "Back to Basics"): leave-one-out baseline + PPO clipped surrogate.

The advantage of sample i is r_i minus the mean reward of the *other* K-1 samples of its prompt: an unbiased
baseline (it does not depend on sample i). OREAL computes its advantages this way too, before filtering.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from alignrl.algorithms.base import Shaped, ShapingInputs, register_algorithm
from alignrl.algorithms.policy_gradient import ClippedPGAlgorithm, ClippedPGParams, check_group_rewards, group_metrics


def leave_one_out_advantages(rewards: Tensor) -> Tensor:
    """A_i = r_i - (sum_{j != i} r_j) / (K - 1), [P, K] -> [P, K]; sums to 0 in each group.

    Equivalently K/(K-1) * (r_i - mean). With n+ of K binary {0,1} rewards: A+ = (K-n+)/(K-1), A- = -n+/(K-1)
    (twice that for +-1 rewards). Raises ValueError for K < 2 (no other sample to form a baseline).
    """
    check_group_rewards(rewards, "leave_one_out_advantages")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    k = r.shape[-1]
    adv = r - (r.sum(dim=-1, keepdim=True) - r) / (k - 1)
    constant = (rewards == rewards[:, :1]).all(dim=-1, keepdim=True)
    return torch.where(constant, torch.zeros_like(adv), adv)


@dataclass
class RLOOParams(ClippedPGParams):
    """RLOO hyperparameters: exactly the shared clipped-PG fields (see :class:`ClippedPGParams`)."""


@register_algorithm("rloo")
class RLOO(ClippedPGAlgorithm):
    """Leave-one-out advantages; loss, KL and entropy terms from :class:`ClippedPGAlgorithm`.

    KL (``kl_coef > 0``): k3 (default) has the forward-KL gradient grad KL(ref||pi); k2 the reverse-KL gradient
    grad KL(pi||ref); k1 zero expected gradient as a loss term (the RLOO paper puts k1 in the reward instead).
    """

    Params = RLOOParams
    params: RLOOParams

    def shape(self, inputs: ShapingInputs) -> Shaped:
        """Advantages [P, K] from the rewards; every sample is kept."""
        adv = leave_one_out_advantages(inputs.rewards)
        keep = torch.ones_like(inputs.rewards, dtype=torch.bool)
        return Shaped(advantages=adv, keep=keep, metrics=group_metrics(inputs.rewards, adv))
