"""design/algorithms.md §0 (shared by §2 and §3): KL estimators on a 5-way softmax, outcomes enumerated exactly.

Each of the 5 outcomes is one sampled "token" y ~ pi; an expectation is sum_y pi(y) * f(y) with pi detached, so
E[grad f] differentiates f only through its own log-probs, exactly as a training loss does.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from alignrl.algorithms.kl import exact_kl_per_token, kl_per_token

V = 5


def _setup(seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """Policy logits theta (leaf, float64), policy log-probs, reference log-probs over V outcomes."""
    g = torch.Generator().manual_seed(seed)
    theta = (1.5 * torch.randn(V, generator=g, dtype=torch.float64)).requires_grad_(True)
    ref_logp = torch.log_softmax(1.5 * torch.randn(V, generator=g, dtype=torch.float64), -1)
    return theta, torch.log_softmax(theta, -1), ref_logp


def _kl(p_logp: Tensor, q_logp: Tensor) -> Tensor:
    return (p_logp.exp() * (p_logp - q_logp)).sum()


def _grad(value: Tensor, theta: Tensor) -> Tensor:
    (g,) = torch.autograd.grad(value, theta, retain_graph=True)
    return g


def _expect(logp: Tensor, values: Tensor) -> Tensor:
    """E_pi[values] over the V enumerated outcomes, with the sampling weights pi detached."""
    return (logp.detach().exp() * values).sum()


def _as_samples(logp: Tensor, ref_logp: Tensor, estimator: str) -> Tensor:
    """The estimator on all V outcomes, laid out as V one-token samples ([V, 1] with a mask), back to [V]."""
    mask = torch.ones(V, 1, dtype=torch.float64)
    return kl_per_token(logp.unsqueeze(-1), ref_logp.unsqueeze(-1), estimator, clamp=None, mask=mask).squeeze(-1)


@pytest.mark.parametrize("seed", range(4))
def test_expected_values(seed: int) -> None:
    """E[k1] = E[k3] = KL(pi||ref) (unbiased); k2's value is biased."""
    _, logp, ref_logp = _setup(seed)
    true = _kl(logp, ref_logp)
    for estimator in ("k1", "k3"):
        torch.testing.assert_close(_expect(logp, _as_samples(logp, ref_logp, estimator)), true, rtol=1e-12, atol=0)
    assert abs(float((_expect(logp, _as_samples(logp, ref_logp, "k2")) - true).detach())) > 1e-4


@pytest.mark.parametrize("seed", range(4))
def test_expected_gradients_as_losses(seed: int) -> None:
    """As loss terms: E[grad k1] = 0, E[grad k2] = grad KL(pi||ref), E[grad k3] = grad KL(ref||pi)."""
    theta, logp, ref_logp = _setup(seed)
    reverse = _grad(_kl(logp, ref_logp), theta)
    forward = _grad(_kl(ref_logp, logp), theta)
    g = {e: _grad(_expect(logp, _as_samples(logp, ref_logp, e)), theta) for e in ("k1", "k2", "k3")}
    torch.testing.assert_close(g["k1"], torch.zeros(V, dtype=torch.float64), atol=1e-14, rtol=0)
    torch.testing.assert_close(g["k2"], reverse, rtol=1e-10, atol=1e-13)
    torch.testing.assert_close(g["k3"], forward, rtol=1e-10, atol=1e-13)
    assert (g["k2"] - g["k3"]).abs().max() > 1e-3  # the reverse and forward gradients really differ here


@pytest.mark.parametrize("seed", range(4))
def test_k1_in_the_reward_gives_the_reverse_kl_gradient(seed: int) -> None:
    """k1 as a (detached) reward with the score-function gradient: E[k1 * grad log pi] = grad KL(pi||ref), and a
    constant baseline changes nothing (E[grad log pi] = 0)."""
    theta, logp, ref_logp = _setup(seed)
    reverse = _grad(_kl(logp, ref_logp), theta)
    k1 = _as_samples(logp, ref_logp, "k1").detach()
    for baseline in (0.0, float(k1.mean()), -3.0):
        got = _grad(_expect(logp, (k1 - baseline) * logp), theta)
        torch.testing.assert_close(got, reverse, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("seed", range(3))
def test_importance_weighted_k3_has_the_reverse_gradient(seed: int) -> None:
    """TRL's ``use_bias_correction_kl``: k3 * pi/pi_old (pi_old = pi detached) adds the score-function term, so the
    expected gradient becomes grad KL(pi||ref) (why alignrl's k3 equals TRL only with that flag off)."""
    theta, logp, ref_logp = _setup(seed)
    ratio = torch.exp(logp - logp.detach())
    got = _grad(_expect(logp, ratio * _as_samples(logp, ref_logp, "k3")), theta)
    torch.testing.assert_close(got, _grad(_kl(logp, ref_logp), theta), rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("seed", range(3))
def test_exact_per_token_kl_value_and_reverse_gradient(seed: int) -> None:
    """exact_kl_per_token from the logits = KL(pi||ref) with the reverse-KL gradient (no expectation needed)."""
    theta, logp, ref_logp = _setup(seed)
    exact = exact_kl_per_token(theta.view(1, 1, V), ref_logp.view(1, 1, V) + 0.7, torch.ones(1, 1)).squeeze()
    true = _kl(logp, ref_logp)
    torch.testing.assert_close(exact, true, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(_grad(exact, theta), _grad(true, theta), rtol=1e-10, atol=1e-13)
    # and it equals the expectation of the unbiased per-sample estimators
    torch.testing.assert_close(exact, _expect(logp, _as_samples(logp, ref_logp, "k3")), rtol=1e-10, atol=0)


def test_zero_at_the_reference() -> None:
    """pi = ref: every estimator, the exact KL and all their gradients are 0."""
    theta, logp, _ = _setup(0)
    ref_logp = logp.detach()
    for e in ("k1", "k2", "k3"):
        value = _expect(logp, _as_samples(logp, ref_logp, e))
        assert abs(float(value.detach())) < 1e-15
        if e != "k1":
            assert _grad(value, theta).abs().max() < 1e-15
    exact = exact_kl_per_token(theta.view(1, 1, V), theta.detach().view(1, 1, V), torch.ones(1, 1)).sum()
    assert abs(float(exact.detach())) < 1e-15 and _grad(exact, theta).abs().max() < 1e-15
