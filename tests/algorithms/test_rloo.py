"""RLOO: leave-one-out advantages and the registry entry (the shared loss is covered in test_grpo.py)."""

import dataclasses

import pytest
import torch

from alignrl.algorithms import PolicyInputs, ShapingInputs, algorithm_class
from alignrl.algorithms.grpo import GRPOParams
from alignrl.algorithms.policy_gradient import ClippedPGParams, aggregate
from alignrl.algorithms.rloo import RLOO, RLOOParams, leave_one_out_advantages


def test_advantages_sum_to_zero_per_group():
    rewards = torch.randn(5, 7, generator=torch.Generator().manual_seed(0))
    adv = leave_one_out_advantages(rewards)
    torch.testing.assert_close(adv.sum(-1), torch.zeros(5), atol=1e-5, rtol=0)
    k = rewards.shape[1]
    torch.testing.assert_close(adv, k / (k - 1) * (rewards - rewards.mean(-1, keepdim=True)))


@pytest.mark.parametrize("pos,neg,a_pos,a_neg", [(1.0, -1.0, 24 / 15, -8 / 15), (1.0, 0.0, 12 / 15, -4 / 15)])
def test_k16_four_correct_matches_hand_formula(pos, neg, a_pos, a_neg):
    """OREAL's numbers: K = 16, n+ = 4, rewards +-1 -> A+ = 2(K-n+)/(K-1) = 24/15, A- = -2n+/(K-1) = -8/15."""
    rewards = torch.full((1, 16), neg)
    rewards[0, :4] = pos
    adv = leave_one_out_advantages(rewards)
    torch.testing.assert_close(adv[0, :4], torch.full((4,), a_pos))
    torch.testing.assert_close(adv[0, 4:], torch.full((12,), a_neg))


def test_equal_rewards_give_exactly_zero():
    adv = leave_one_out_advantages(torch.tensor([[0.1, 0.1, 0.1], [-1.0, -1.0, -1.0]]))
    assert (adv == 0).all()


def test_single_sample_groups_raise_clearly():
    with pytest.raises(ValueError, match="K >= 2"):
        leave_one_out_advantages(torch.ones(4, 1))


def test_shape_and_on_policy_gradient_end_to_end():
    rewards = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    algo = RLOO(RLOOParams(loss_aggregation="seq_mean_token_mean"))
    shaped = algo.shape(ShapingInputs(rewards=rewards, mask=torch.ones(6, 4), sampler_logp=torch.zeros(6, 4)))
    assert shaped.keep.all() and shaped.metrics["frac_zero_std_groups"] == pytest.approx(0.5)
    adv = shaped.advantages.reshape(-1)
    torch.testing.assert_close(adv, torch.tensor([1.0, -0.5, -0.5, 0.0, 0.0, 0.0]))

    logp = (-torch.rand(6, 4, generator=torch.Generator().manual_seed(1))).requires_grad_(True)
    mask = torch.ones(6, 4)
    mask[1, 2:] = 0
    inputs = PolicyInputs(logp=logp, old_logp=logp.detach(), mask=mask, advantages=adv, rewards=rewards.reshape(-1),
                          group_size=3, num_tokens=float(mask.sum()), num_sequences=6.0, max_tokens=4)
    loss, _ = algo.loss(inputs)
    (g,) = torch.autograd.grad(loss, logp)
    (g_ref,) = torch.autograd.grad(aggregate(-adv[:, None] * logp, mask, "seq_mean_token_mean", 0, 6.0, 4), logp)
    torch.testing.assert_close(g, g_ref)


def test_registry_and_params():
    cls = algorithm_class("rloo")
    assert cls is RLOO and cls.Params is RLOOParams
    assert issubclass(RLOOParams, ClippedPGParams) and issubclass(GRPOParams, ClippedPGParams)
    names = {f.name for f in dataclasses.fields(RLOOParams)}
    assert "scale_rewards" not in names and names == {f.name for f in dataclasses.fields(ClippedPGParams)}
    assert RLOO(RLOOParams(kl_coef=0.05)).needs_reference
    with pytest.raises(ValueError, match="clip_eps"):
        RLOOParams(clip_eps=-0.2)
