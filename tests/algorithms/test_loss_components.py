"""Each loss component has its own aggregation; exact-KL and truncated-importance-sampling inputs reach the loss."""

import pytest
import torch

from alignrl.algorithms import PolicyInputs
from alignrl.algorithms.grpo import GRPO, GRPOParams
from alignrl.algorithms.kl import exact_kl_per_token, kl_per_token

D = torch.float64


def _inputs(**kw):
    g = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0]], dtype=D)
    logp = (-torch.rand(2, 4, generator=g, dtype=D)).requires_grad_(True)
    base = dict(logp=logp, old_logp=logp.detach(), mask=mask, advantages=torch.zeros(2, dtype=D),
                rewards=torch.zeros(2, dtype=D), group_size=2, num_tokens=6.0, num_sequences=2.0, max_tokens=4,
                ref_logp=logp.detach() + 0.3 * torch.randn(2, 4, generator=g, dtype=D))
    return PolicyInputs(**{**base, **kw})


def test_kl_aggregation_is_independent_of_the_policy_term():
    """A sequence-summed KL (trajectory KL, demonstration-regularised RL) is not rescaled by 1/length."""
    inputs = _inputs()
    kl = kl_per_token(inputs.logp, inputs.ref_logp, "k2", mask=inputs.mask)
    summed, _ = GRPO(GRPOParams(kl_coef=1.0, kl_estimator="k2", kl_aggregation="seq_mean_token_sum")).loss(inputs)
    token_mean, _ = GRPO(GRPOParams(kl_coef=1.0, kl_estimator="k2")).loss(inputs)
    torch.testing.assert_close(summed, (kl * inputs.mask).sum() / 2.0)
    torch.testing.assert_close(token_mean, (kl * inputs.mask).sum() / 6.0)


def test_exact_kl_is_taken_from_the_learner():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, generator=g, dtype=D, requires_grad=True)
    exact = exact_kl_per_token(logits, torch.randn(2, 4, 5, generator=g, dtype=D), _inputs().mask)
    algorithm = GRPO(GRPOParams(kl_coef=0.5, kl_estimator="exact", kl_aggregation="seq_mean_token_sum"))
    assert algorithm.needs_exact_kl and algorithm.needs_reference
    loss, stats = algorithm.loss(_inputs(exact_kl=exact))
    torch.testing.assert_close(loss, 0.5 * (exact * _inputs().mask).sum() / 2.0)
    loss.backward()
    assert logits.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="exact_kl"):
        algorithm.loss(_inputs())


def test_truncated_importance_sampling_caps_the_engine_ratio():
    inputs = _inputs(advantages=torch.ones(2, dtype=D))
    sampler = inputs.old_logp - torch.tensor([[0.0, 2.0, -2.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=D)
    plain, _ = GRPO(GRPOParams()).loss(inputs)
    corrected, _ = GRPO(GRPOParams(tis_cap=2.0)).loss(_inputs(advantages=torch.ones(2, dtype=D),
                                                             sampler_logp=sampler))
    weights = torch.tensor([1.0, 2.0, torch.exp(torch.tensor(-2.0)).item(), 1.0, 1.0, 1.0], dtype=D)
    torch.testing.assert_close(corrected, -(weights.sum()) / 6.0)  # ratio 1, advantage 1: each token gives -w
    torch.testing.assert_close(plain, torch.tensor(-1.0, dtype=D))
