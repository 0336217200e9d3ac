"""Demonstration-regularised RL (design/algorithms.md §3): zero gradient at the BC policy, the Gibbs optimum of a
softmax bandit under exact expectations, the 1/lambda scaling, sequence-sum KL, lambda = 0 = plain PG, k3 != k2."""

from __future__ import annotations

import itertools

import pytest
import torch
from torch import Tensor

from alignrl.algorithms import PolicyInputs, ShapingInputs, algorithm_class
from alignrl.algorithms.demo_kl import KL_MODES, DemoKL, DemoKLParams
from alignrl.algorithms.grpo import GRPO, GRPOParams
from alignrl.algorithms.kl import exact_kl_per_token
from alignrl.algorithms.rloo import RLOO, RLOOParams
from alignrl.config import ConfigError
from alignrl.config.schema import AlgorithmConfig

F64 = torch.float64


def _inputs(logp: Tensor, ref_logp: Tensor | None, mask: Tensor, adv: Tensor, rewards: Tensor, k: int,
            exact_kl: Tensor | None = None, old_logp: Tensor | None = None, num_sequences: float | None = None
            ) -> PolicyInputs:
    return PolicyInputs(
        logp=logp, old_logp=logp.detach() if old_logp is None else old_logp, mask=mask, advantages=adv,
        rewards=rewards, group_size=k, num_tokens=float(mask.sum()),
        num_sequences=float(mask.shape[0] if num_sequences is None else num_sequences), max_tokens=mask.shape[1],
        ref_logp=ref_logp, exact_kl=exact_kl)


# ---------------------------------------------------------------- softmax bandit with exact expectations


class Bandit:
    """A arms, policy softmax(theta), reference pi0. One step of the algorithm's own ``shape`` + ``loss`` is taken
    in exact expectation: every group of K arms drawn i.i.d. from pi is enumerated (A^K groups), and the loss of
    each group is weighted by its probability (detached), which is E_groups[loss] for the rollout policy pi."""

    def __init__(self, rewards: list[float], ref_logits: list[float], k: int = 2):
        self.r = torch.tensor(rewards, dtype=F64)
        self.ref_logp = torch.log_softmax(torch.tensor(ref_logits, dtype=F64), -1)
        self.k, arms = k, len(rewards)
        self.groups = torch.tensor(list(itertools.product(range(arms), repeat=k)))  # [G, K]

    def expected_loss(self, algo: DemoKL, theta: Tensor) -> Tensor:
        logp_all = torch.log_softmax(theta, -1)
        g, k = self.groups.shape
        rows = self.groups.reshape(-1)
        mask = torch.ones(g * k, 1, dtype=F64)
        shaped = algo.shape(ShapingInputs(rewards=self.r[self.groups], mask=mask,
                                          sampler_logp=logp_all.detach()[rows].unsqueeze(-1),
                                          ref_logp=self.ref_logp[rows].unsqueeze(-1)))
        weights = logp_all.detach().exp()[self.groups].prod(-1)  # [G] probability of each group
        exact = None
        if algo.needs_exact_kl:  # one position, V = arms: the exact KL is the same for every row
            exact = exact_kl_per_token(theta.view(1, 1, -1), self.ref_logp.view(1, 1, -1),
                                       torch.ones(1, 1, dtype=F64)).expand(k, 1)
        total = theta.new_zeros(())
        for i in range(g):
            sel = rows[i * k:(i + 1) * k]
            loss, _ = algo.loss(_inputs(logp_all[sel].unsqueeze(-1), self.ref_logp[sel].unsqueeze(-1),
                                        torch.ones(k, 1, dtype=F64), shaped.advantages[i], self.r[sel], k, exact))
            total = total + weights[i] * loss
        return total

    def solve(self, algo: DemoKL, steps: int = 200) -> Tensor:
        """Descent on the expected loss from theta = reference logits; returns log(pi / pi0) at the end.

        The step is preconditioned by 1/pi (the softmax natural gradient, lr 0.5/lambda) only to converge in few
        steps: a positive diagonal preconditioner moves the iterates, not the fixed point, which is where the
        expected gradient of the algorithm's own loss vanishes."""
        theta = self.ref_logp.clone().requires_grad_(True)
        lr = 0.5 / algo.params.kl_coef
        for _ in range(steps):
            (grad,) = torch.autograd.grad(self.expected_loss(algo, theta), theta)
            if grad.abs().max() < 1e-11:
                break
            with torch.no_grad():
                theta -= lr * grad / torch.softmax(theta, -1)
        assert grad.abs().max() < 1e-11, f"not converged: |grad| = {float(grad.abs().max()):.2e}"
        return torch.log_softmax(theta.detach(), -1) - self.ref_logp


BANDIT = dict(rewards=[1.0, 0.2, -0.5], ref_logits=[0.0, 0.8, -0.4])


def _algo(**kw) -> DemoKL:
    return DemoKL(DemoKLParams(**kw))


def _gibbs_log_ratio(bandit: Bandit, lam: float) -> Tensor:
    """log(pi*/pi0) of the optimum pi* = pi0 exp(r/lam)/Z of E r - lam KL(pi||pi0)."""
    return bandit.r / lam - torch.logsumexp(bandit.ref_logp + bandit.r / lam, -1)


@pytest.mark.parametrize("mode", ["reward_k1", "loss_k2", "loss_exact"])
def test_bandit_converges_to_gibbs_policy(mode: str) -> None:
    bandit, lam = Bandit(**BANDIT), 0.5
    got = bandit.solve(_algo(kl_coef=lam, kl_mode=mode))
    torch.testing.assert_close(got, _gibbs_log_ratio(bandit, lam), atol=1e-6, rtol=0)


@pytest.mark.parametrize("mode", ["reward_k1", "loss_exact"])
def test_doubling_lambda_halves_log_ratio_differences(mode: str) -> None:
    bandit = Bandit(**BANDIT)
    small, large = (bandit.solve(_algo(kl_coef=lam, kl_mode=mode)) for lam in (0.5, 1.0))
    d_small, d_large = small[0] - small[1:], large[0] - large[1:]  # log(pi(a)/pi0(a)) - log(pi(b)/pi0(b))
    torch.testing.assert_close(d_small, (bandit.r[0] - bandit.r[1:]) / 0.5, atol=1e-6, rtol=0)
    torch.testing.assert_close(d_large, d_small / 2, atol=1e-6, rtol=0)


def test_k3_mode_converges_to_the_forward_kl_optimum_not_gibbs() -> None:
    """loss_k3 ascends E r - lam KL(pi0||pi): stationary where pi_a (r_a - E_pi r) + lam (pi0_a - pi_a) = 0."""
    bandit, lam = Bandit(**BANDIT), 0.5
    log_ratio = bandit.solve(_algo(kl_coef=lam, kl_mode="loss_k3"))
    pi, pi0 = (bandit.ref_logp + log_ratio).exp(), bandit.ref_logp.exp()
    residual = pi * (bandit.r - (pi * bandit.r).sum()) + lam * (pi0 - pi)
    torch.testing.assert_close(residual, torch.zeros(3, dtype=F64), atol=1e-7, rtol=0)
    assert (log_ratio - _gibbs_log_ratio(bandit, lam)).abs().max() > 0.05


def test_group_mean_in_a_loss_mode_scales_lambda_by_k_over_k_minus_1() -> None:
    """As documented: r - group mean = (K-1)/K * RLOO, so with the KL in the loss the optimum is the Gibbs policy
    of lam * K/(K-1); with the KL in the reward the baseline only changes the step size."""
    bandit, lam = Bandit(**BANDIT, k=2), 0.5
    got = bandit.solve(_algo(kl_coef=lam, kl_mode="loss_exact", advantage="group_mean"))
    torch.testing.assert_close(got, _gibbs_log_ratio(bandit, lam * 2), atol=1e-6, rtol=0)
    got = bandit.solve(_algo(kl_coef=lam, kl_mode="reward_k1", advantage="group_mean"))
    torch.testing.assert_close(got, _gibbs_log_ratio(bandit, lam), atol=1e-6, rtol=0)


def test_k3_and_k2_expected_gradients_differ_as_documented() -> None:
    """With r = 0 away from pi0: E[grad loss] is lam grad KL(pi||pi0) for loss_k2 and loss_exact, and
    lam grad KL(pi0||pi) for loss_k3."""
    bandit, lam = Bandit(rewards=[0.0, 0.0, 0.0], ref_logits=BANDIT["ref_logits"]), 0.3
    theta = torch.tensor([1.0, -0.5, 0.4], dtype=F64, requires_grad=True)
    logp = torch.log_softmax(theta, -1)
    kl = lambda p, q: (p.exp() * (p - q)).sum()  # noqa: E731
    (reverse,) = torch.autograd.grad(lam * kl(logp, bandit.ref_logp), theta, retain_graph=True)
    (forward,) = torch.autograd.grad(lam * kl(bandit.ref_logp, logp), theta)
    grads = {m: torch.autograd.grad(bandit.expected_loss(_algo(kl_coef=lam, kl_mode=m), theta), theta)[0]
             for m in ("loss_k2", "loss_exact", "loss_k3", "reward_k1")}
    torch.testing.assert_close(grads["loss_k2"], reverse, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(grads["loss_exact"], reverse, atol=1e-12, rtol=1e-9)
    torch.testing.assert_close(grads["loss_k3"], forward, atol=1e-12, rtol=1e-9)
    assert (grads["loss_k3"] - grads["loss_k2"]).abs().max() > 1e-2
    # reward_k1 with RLOO: the same reverse-KL gradient (RLOO's leave-one-out baseline is unbiased)
    torch.testing.assert_close(grads["reward_k1"], reverse, atol=1e-12, rtol=1e-9)


# ---------------------------------------------------------------- token-level checks


def _lm_batch(seed: int = 0, p: int = 2, k: int = 3, t: int = 5, v: int = 7):
    """Policy logits (leaf), sampled tokens' log-probs, and a mask with ragged lengths."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(p * k, t, v, generator=g, dtype=F64).requires_grad_(True)
    tokens = torch.randint(v, (p * k, t), generator=g)
    lengths = torch.randint(1, t + 1, (p * k,), generator=g)
    mask = (torch.arange(t) < lengths.unsqueeze(-1)).to(F64)
    logp = torch.log_softmax(logits, -1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
    return logits, logp, mask


@pytest.mark.parametrize("mode", KL_MODES)
@pytest.mark.parametrize("advantage", ["rloo", "group_mean"])
def test_zero_reward_at_the_bc_policy_gives_zero_gradient(mode: str, advantage: str) -> None:
    """r = 0 and pi = pi_SFT: shaped rewards, advantages and the loss gradient are exactly 0 in every mode."""
    p, k = 2, 3
    logits, logp, mask = _lm_batch(p=p, k=k)
    ref_logits = logits.detach().clone()
    ref_logp = logp.detach().clone()
    algo = _algo(kl_coef=0.7, kl_mode=mode, advantage=advantage)
    shaped = algo.shape(ShapingInputs(rewards=torch.zeros(p, k, dtype=F64), mask=mask, sampler_logp=ref_logp,
                                      ref_logp=ref_logp))
    assert torch.equal(shaped.advantages, torch.zeros(p, k, dtype=F64))
    assert shaped.metrics["kl_seq"] == 0.0
    exact = exact_kl_per_token(logits, ref_logits, mask) if algo.needs_exact_kl else None
    loss, _ = algo.loss(_inputs(logp, ref_logp, mask, shaped.advantages.view(-1), torch.zeros(p * k, dtype=F64),
                                k, exact))
    (grad,) = torch.autograd.grad(loss, logits)
    assert grad.abs().max() < 1e-14


@pytest.mark.parametrize("mode", ["loss_k2", "loss_k3", "loss_exact", "reward_k1"])
def test_kl_is_summed_over_each_sequence(mode: str) -> None:
    """The same per-token KL on a twice-longer sequence doubles its KL term (a token mean would not)."""
    lam, d = 0.4, 0.3  # log pi - log pi_ref on every token

    def kl_term(length: int) -> float:
        mask = torch.ones(2, length, dtype=F64)  # one group of K = 2 identical samples
        logp = torch.full((2, length), -1.0, dtype=F64)
        ref = logp - d
        algo = _algo(kl_coef=lam, kl_mode=mode)
        shaped = algo.shape(ShapingInputs(rewards=torch.zeros(1, 2, dtype=F64), mask=mask, sampler_logp=logp,
                                          ref_logp=ref))
        if mode == "reward_k1":
            return float(-shaped.per_sample["shaped_reward"][0, 0])  # lam * sum_t k1_t
        exact = torch.full((2, length), 0.05, dtype=F64) if mode == "loss_exact" else None
        loss, _ = algo.loss(_inputs(logp, ref, mask, torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64), 2,
                                    exact))
        return float(loss)

    short, long = kl_term(3), kl_term(6)
    assert short > 0
    assert long == pytest.approx(2 * short, rel=1e-12)
    if mode == "reward_k1":
        assert short == pytest.approx(lam * 3 * d, rel=1e-12)


def test_reward_k1_shaping_and_metrics() -> None:
    """shaped = r - lam * sum_t k1 (clamped), advantages are RLOO of the shaped rewards, the clamp is counted."""
    mask = torch.tensor([[1, 1, 0], [1, 1, 1], [1, 0, 0], [1, 1, 1]], dtype=F64)
    sampler = torch.tensor([[-1.0, -2.0, 9.0], [-0.5, -0.1, -3.0], [-1.0, 0.0, 0.0], [-2.0, -1.0, -0.2]], dtype=F64)
    ref = torch.tensor([[-1.5, -1.0, -50.0], [-0.4, -40.0, -3.0], [-1.0, 0.0, 0.0], [-2.5, -1.0, -0.1]], dtype=F64)
    rewards = torch.tensor([[1.0, 0.0], [0.5, 2.0]], dtype=F64)
    algo = _algo(kl_coef=0.1, kl_clamp=20.0)
    shaped = algo.shape(ShapingInputs(rewards=rewards, mask=mask, sampler_logp=sampler, ref_logp=ref))
    d = (ref - sampler).clamp(-20, 20) * mask
    kl_seq = (-d).sum(-1).view(2, 2)
    torch.testing.assert_close(shaped.per_sample["kl_seq"], kl_seq)
    expected = rewards - 0.1 * kl_seq
    torch.testing.assert_close(shaped.per_sample["shaped_reward"], expected)
    torch.testing.assert_close(shaped.advantages, RLOO(RLOOParams()).shape(
        ShapingInputs(rewards=expected, mask=mask, sampler_logp=sampler)).advantages)
    assert shaped.metrics["kl_seq_clamp_fraction"] == pytest.approx(1 / 9)  # one of 9 valid tokens (|d| = 39.9)
    assert shaped.metrics["kl_seq"] == pytest.approx(float(kl_seq.mean()))
    assert shaped.metrics["kl_penalty"] == pytest.approx(0.1 * float(kl_seq.mean()))
    assert torch.isfinite(shaped.advantages).all()  # the masked 9.0 / -50.0 pair never enters


@pytest.mark.parametrize("mode", KL_MODES)
@pytest.mark.parametrize("advantage,plain", [("rloo", "rloo"), ("group_mean", "grpo")])
def test_lambda_zero_is_plain_policy_gradient(mode: str, advantage: str, plain: str) -> None:
    p, k = 2, 3
    logits, logp, mask = _lm_batch(seed=1, p=p, k=k)
    g = torch.Generator().manual_seed(5)
    rewards = torch.randn(p, k, generator=g, dtype=F64)
    ref = logp.detach() + 0.3 * torch.randn(logp.shape, generator=g, dtype=F64)
    old = logp.detach() + 0.1 * torch.randn(logp.shape, generator=g, dtype=F64)
    base = (RLOO(RLOOParams(loss_aggregation="seq_mean_token_sum")) if plain == "rloo"
            else GRPO(GRPOParams(scale_rewards=False, loss_aggregation="seq_mean_token_sum")))
    algo = _algo(kl_coef=0.0, kl_mode=mode, advantage=advantage)
    assert not algo.needs_exact_kl and algo.needs_reference  # log_kl: reference still run for the metric
    assert not _algo(kl_coef=0.0, log_kl=False).needs_reference
    shape_in = ShapingInputs(rewards=rewards, mask=mask, sampler_logp=old, ref_logp=ref)
    adv = algo.shape(shape_in).advantages
    torch.testing.assert_close(adv, base.shape(shape_in).advantages, rtol=0, atol=0)
    results = []
    for a in (algo, base):
        loss, _ = a.loss(_inputs(logp, ref, mask, adv.view(-1), rewards.view(-1), k, old_logp=old))
        results.append((loss, torch.autograd.grad(loss, logits, retain_graph=True)[0]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)


def test_reference_and_exact_kl_requirements() -> None:
    assert _algo(kl_coef=0.1).needs_reference and not _algo(kl_coef=0.1).needs_exact_kl
    assert _algo(kl_coef=0.1, kl_mode="loss_exact").needs_exact_kl
    with pytest.raises(ValueError, match="ref_logp is None"):
        _algo(kl_coef=0.1).shape(ShapingInputs(rewards=torch.zeros(1, 2), mask=torch.ones(2, 1),
                                               sampler_logp=torch.zeros(2, 1)))


def test_params_validation_and_registry() -> None:
    assert algorithm_class("demo_kl") is DemoKL
    for bad in (dict(kl_coef=-0.1), dict(kl_mode="loss_k1"), dict(advantage="std"), dict(clip_eps=0.0),
                dict(kl_clamp=0.0), dict(loss_aggregation="sum")):
        with pytest.raises(ValueError):
            DemoKLParams(**bad)
    with pytest.raises(ConfigError, match="kl_mode"):
        AlgorithmConfig.from_mapping({"name": "demo_kl", "kl_mode": "forward"}, source="recipe.yaml")
    cfg = AlgorithmConfig.from_mapping({"name": "demo_kl", "kl_coef": 0.2, "kl_mode": "loss_k2"})
    assert cfg.params.clipped_pg().kl_aggregation == "seq_mean_token_sum"
    assert cfg.params.clipped_pg().kl_estimator == "k2" and cfg.params.clipped_pg().kl_coef == 0.2
    assert _algo(kl_coef=0.2).pg.params.kl_coef == 0.0  # reward_k1: no KL in the loss
