"""KL estimators (design/algorithms.md §0): exact enumeration on a 5-way softmax, clamping, masking."""

import pytest
import torch

from alignrl.algorithms.kl import exact_kl_per_token, kl_clamp_fraction, kl_per_token



@pytest.fixture(autouse=True)
def _float64():
    """Exact-enumeration checks in float64; restore the process-wide default afterwards."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


def _softmax_pair(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    theta = torch.randn(5, generator=g).requires_grad_(True)
    ref_logp = torch.log_softmax(torch.randn(5, generator=g), -1)
    return theta, ref_logp


def _expected(theta, ref_logp, estimator):
    """(E_pi[k], E_pi[grad_theta k]) by exact enumeration of the 5 outcomes; the estimator is used as a loss,
    i.e. differentiated only through its own logp (no score-function term), as in a training loss."""
    logp = torch.log_softmax(theta, -1)
    pi = logp.exp().detach()
    k = kl_per_token(logp, ref_logp, estimator, clamp=None)  # all 5 outcomes at once, [5]
    value = (pi * k).sum()
    (grad,) = torch.autograd.grad(value, theta)
    return value.detach(), grad


def _kl(p_logp, q_logp):
    return (p_logp.exp() * (p_logp - q_logp)).sum()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_estimators_enumerated_exactly(seed):
    theta, ref_logp = _softmax_pair(seed)
    logp = torch.log_softmax(theta, -1)
    kl_fwd_pi_ref = _kl(logp, ref_logp)  # KL(pi||ref)
    (grad_reverse,) = torch.autograd.grad(kl_fwd_pi_ref, theta, retain_graph=True)
    (grad_forward,) = torch.autograd.grad(_kl(ref_logp, logp), theta)  # grad KL(ref||pi)
    true_kl = kl_fwd_pi_ref.detach()

    e_k1, g_k1 = _expected(theta, ref_logp, "k1")
    e_k2, g_k2 = _expected(theta, ref_logp, "k2")
    e_k3, g_k3 = _expected(theta, ref_logp, "k3")

    torch.testing.assert_close(e_k1, true_kl)
    torch.testing.assert_close(e_k3, true_kl)
    torch.testing.assert_close(g_k1, torch.zeros(5), atol=1e-12, rtol=0)
    torch.testing.assert_close(g_k2, grad_reverse)
    torch.testing.assert_close(g_k3, grad_forward)
    assert not torch.allclose(g_k2, g_k3)  # the two gradients really differ here
    assert e_k2 != pytest.approx(float(true_kl))  # k2's value is biased


def test_exact_kl_matches_analytic_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 5, generator=g).requires_grad_(True)
    ref_logits = torch.randn(2, 3, 5, generator=g)
    mask = torch.ones(2, 3)
    out = exact_kl_per_token(logits, ref_logits, mask)
    p, q = torch.log_softmax(logits, -1), torch.log_softmax(ref_logits, -1)
    analytic = (p.exp() * (p - q)).sum(-1)
    torch.testing.assert_close(out, analytic)
    assert (out >= -1e-12).all()
    (g1,) = torch.autograd.grad(out.sum(), logits)
    (g2,) = torch.autograd.grad(analytic.sum(), logits)
    torch.testing.assert_close(g1, g2)
    # identical distributions: KL 0
    torch.testing.assert_close(exact_kl_per_token(ref_logits, ref_logits + 3.0, mask), torch.zeros(2, 3))


def test_exact_kl_masked_positions_and_zero_mass_tokens():
    logits = torch.randn(1, 3, 4).requires_grad_(True)
    ref_logits = torch.randn(1, 3, 4)
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    with torch.no_grad():
        bad = logits.clone()
        bad[0, 2] = float("nan")
        bad[0, 1, 0] = float("-inf")  # a token the policy can never emit contributes 0, not NaN
    bad.requires_grad_(True)
    out = exact_kl_per_token(bad, ref_logits, mask)
    assert torch.isfinite(out).all() and out[0, 2] == 0
    out.sum().backward()
    assert torch.isfinite(bad.grad).all() and (bad.grad[0, 2] == 0).all()


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_zero_at_reference_and_k3_zero_gradient(estimator):
    logp = torch.log(torch.tensor([[0.3, 0.5, 0.9]])).requires_grad_(True)
    k = kl_per_token(logp, logp.detach().clone(), estimator)
    assert (k == 0).all()
    k.sum().backward()
    if estimator in ("k2", "k3"):
        assert (logp.grad == 0).all()


def test_known_values():
    logp = torch.tensor([0.0, -1.0])
    ref = torch.tensor([-1.0, 0.0])  # d = -1, +1
    d = ref - logp
    torch.testing.assert_close(kl_per_token(logp, ref, "k1"), -d)
    torch.testing.assert_close(kl_per_token(logp, ref, "k2"), d**2 / 2)
    torch.testing.assert_close(kl_per_token(logp, ref, "k3"), torch.exp(d) - d - 1)


def test_clamp_keeps_values_finite_and_reports_fraction():
    logp = torch.tensor([[-200.0, -1.0, -0.5, -1.0]], requires_grad=True)
    ref = torch.tensor([[-0.1, -1.2, -300.0, -1.0]])
    mask = torch.ones(1, 4)
    out = kl_per_token(logp, ref, "k3", clamp=20.0)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(logp.grad).all()
    assert logp.grad[0, 0] == 0 and logp.grad[0, 2] == 0  # clamped tokens pass no gradient
    assert float(kl_clamp_fraction(logp, ref, mask, 20.0)) == pytest.approx(0.5)
    assert float(kl_clamp_fraction(logp, ref, torch.tensor([[0.0, 1.0, 1.0, 1.0]]), 20.0)) == pytest.approx(1 / 3)
    assert float(kl_clamp_fraction(logp, ref, mask, None)) == 0.0


@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_mask_blocks_nan_in_values_and_gradients(estimator):
    logp = torch.tensor([[-1.0, float("nan"), -2.0]], requires_grad=True)
    ref = torch.tensor([[-1.5, float("inf"), -1.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])
    out = kl_per_token(logp, ref, estimator, mask=mask)
    assert out[0, 1] == 0 and torch.isfinite(out).all()
    out.sum().backward()
    assert torch.isfinite(logp.grad).all() and logp.grad[0, 1] == 0


def test_unknown_estimator_raises():
    with pytest.raises(ValueError, match="k4"):
        kl_per_token(torch.zeros(1, 1), torch.zeros(1, 1), "k4")  # type: ignore[arg-type]
