"""GRPO and the shared clipped policy-gradient pieces (policy_gradient.py): advantages, clipping, aggregation."""

import math

import pytest
import torch

from alignrl.algorithms import PolicyInputs, ShapingInputs, algorithm_class
from alignrl.algorithms.grpo import GRPO, GRPOParams, group_advantages
from alignrl.algorithms.policy_gradient import LOSS_AGGREGATIONS, aggregate, clipped_surrogate

D = torch.float64


def _batch(seed=0, b=4, t=6):
    """Variable-length rows; masked positions hold garbage the loss must never see."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.tensor([6, 2, 4, 1, 5, 3, 6, 2][:b])
    mask = (torch.arange(t)[None] < lengths[:, None]).to(D)
    logp = (-torch.rand(b, t, generator=g, dtype=D) * 2).requires_grad_(True)
    old = (logp.detach() + 0.1 * torch.randn(b, t, generator=g, dtype=D))
    ref = (logp.detach() + 0.3 * torch.randn(b, t, generator=g, dtype=D))
    adv = torch.randn(b, generator=g, dtype=D)
    return logp, old, ref, adv, mask


def _inputs(logp, old, mask, adv, ref=None, num_tokens=None, num_sequences=None, max_tokens=8, **kw):
    return PolicyInputs(
        logp=logp, old_logp=old, mask=mask, advantages=adv, rewards=torch.zeros_like(adv), group_size=2,
        num_tokens=float(mask.sum()) if num_tokens is None else num_tokens,
        num_sequences=float(mask.shape[0]) if num_sequences is None else num_sequences,
        max_tokens=max_tokens, ref_logp=ref, **kw,
    )


# ---- advantages ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("scale", [True, False])
def test_equal_rewards_give_exactly_zero_advantage(scale):
    rewards = torch.tensor([[0.1, 0.1, 0.1], [1.0, 1.0, 1.0], [0.3, 0.7, 0.3]])
    adv = group_advantages(rewards, scale=scale)
    assert torch.isfinite(adv).all()
    assert (adv[:2] == 0).all() and (adv[2] != 0).all()


def test_group_advantages_hand_formula_unbiased_std():
    adv = group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]))
    std = math.sqrt((0.75**2 + 3 * 0.25**2) / 3)  # unbiased (K-1) std = 0.5, as torch.std / TRL
    expected = torch.tensor([[0.75, -0.25, -0.25, -0.25]]) / (std + 1e-4)
    torch.testing.assert_close(adv, expected)
    torch.testing.assert_close(group_advantages(torch.tensor([[1.0, 0.0, 0.0, 0.0]]), scale=False),
                               torch.tensor([[0.75, -0.25, -0.25, -0.25]]))


def test_group_advantages_rejects_bad_groups():
    with pytest.raises(ValueError, match="K >= 2"):
        group_advantages(torch.ones(3, 1))
    with pytest.raises(ValueError, match="NaN"):
        group_advantages(torch.tensor([[1.0, float("nan")]]))


def test_shape_keeps_all_and_reports_zero_std_groups():
    rewards = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    inputs = ShapingInputs(rewards=rewards, mask=torch.ones(4, 3), sampler_logp=torch.zeros(4, 3))
    out = GRPO(GRPOParams()).shape(inputs)
    assert out.keep.dtype == torch.bool and out.keep.all() and out.advantages.shape == (2, 2)
    assert out.metrics["frac_zero_std_groups"] == pytest.approx(0.5)


# ---- clipped surrogate -----------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "ratio,adv,expect_clipped",
    [
        (1.2 - 1e-6, 1.0, False), (1.2 + 1e-6, 1.0, True),     # A > 0: upper bound clips
        (0.8 + 1e-6, -1.0, False), (0.8 - 1e-6, -1.0, True),   # A < 0: lower bound clips
        (1.2 + 1e-3, -1.0, False), (0.8 - 1e-3, 1.0, False),   # the "wrong" side never clips
        (1.28 - 1e-6, 1.0, False), (1.28 + 1e-6, 1.0, True),   # clip-higher: eps_high = 0.28
    ],
)
def test_clipping_boundaries_gradient_zero_exactly_when_clipped(ratio, adv, expect_clipped):
    eps_high = 0.28 if abs(ratio - 1.28) < 1e-2 else 0.2
    old = torch.tensor([[-1.0]], dtype=D)
    logp = (old + math.log(ratio)).requires_grad_(True)
    loss, clipped = clipped_surrogate(logp, old, torch.tensor([adv], dtype=D), 0.2, eps_high)
    loss.sum().backward()
    assert bool(clipped[0, 0]) == expect_clipped
    if expect_clipped:
        assert logp.grad[0, 0] == 0
    else:
        torch.testing.assert_close(logp.grad[0, 0], torch.tensor(-adv * ratio, dtype=D))


def test_huge_log_ratio_is_finite():
    logp = torch.tensor([[0.0, -500.0]], dtype=D, requires_grad=True)
    old = torch.tensor([[-500.0, 0.0]], dtype=D)
    loss, _ = clipped_surrogate(logp, old, torch.tensor([-1.0], dtype=D), 0.2, 0.2)
    loss.sum().backward()
    assert torch.isfinite(loss).all() and torch.isfinite(logp.grad).all()


# ---- aggregation -----------------------------------------------------------------------------------------------

def test_aggregate_hand_values():
    per_tok = torch.tensor([[1.0, 2.0, 3.0], [4.0, 0.0, 0.0]], dtype=D)
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]], dtype=D)
    agg = lambda mode: float(aggregate(per_tok, mask, mode, num_tokens=4, num_sequences=2, max_tokens=5))  # noqa
    assert agg("token_mean") == pytest.approx(10 / 4)
    assert agg("seq_mean_token_mean") == pytest.approx((2.0 + 4.0) / 2)
    assert agg("seq_mean_token_sum_norm") == pytest.approx(10 / (2 * 5))
    with pytest.raises(ValueError, match="loss_aggregation"):
        aggregate(per_tok, mask, "mean", 4, 2, 5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="normaliser"):
        aggregate(per_tok, mask, "token_mean", 0, 2, 5)


@pytest.mark.parametrize("mode", LOSS_AGGREGATIONS)
@pytest.mark.parametrize("kl_coef", [0.0, 0.5])
def test_micro_batch_split_matches_full_batch(mode, kl_coef):
    logp, old, ref, adv, mask = _batch(b=8)
    algo = GRPO(GRPOParams(loss_aggregation=mode, kl_coef=kl_coef))
    n_tok, n_seq = float(mask.sum()), 8.0
    full, _ = algo.loss(_inputs(logp, old, mask, adv, ref))
    (g_full,) = torch.autograd.grad(full, logp)
    total = 0.0
    for rows in (slice(0, 2), slice(2, 6), slice(6, 8)):  # uneven micro-batches, global counts
        part, _ = algo.loss(_inputs(logp[rows], old[rows], mask[rows], adv[rows], ref[rows],
                                    num_tokens=n_tok, num_sequences=n_seq))
        total = total + part
    (g_split,) = torch.autograd.grad(total, logp)
    torch.testing.assert_close(total, full)
    torch.testing.assert_close(g_split, g_full)


@pytest.mark.parametrize("mode", LOSS_AGGREGATIONS)
def test_on_policy_gradient_is_plain_policy_gradient(mode):
    logp, _, _, adv, mask = _batch()
    loss, stats = GRPO(GRPOParams(loss_aggregation=mode)).loss(_inputs(logp, logp.detach(), mask, adv))
    (g,) = torch.autograd.grad(loss, logp)
    pg = aggregate(-adv[:, None] * logp, mask, mode, float(mask.sum()), 4.0, 8)
    (g_ref,) = torch.autograd.grad(pg, logp)
    torch.testing.assert_close(g, g_ref)
    assert float(stats["clip_fraction"]) == 0.0 and float(stats["ratio_mean"]) == pytest.approx(1.0)


# ---- masking, KL, entropy ------------------------------------------------------------------------------------

@pytest.mark.parametrize("estimator", ["k1", "k2", "k3"])
def test_masked_positions_contribute_nothing(estimator):
    logp, old, ref, adv, mask = _batch()
    algo = GRPO(GRPOParams(kl_coef=0.1, kl_estimator=estimator, entropy_coef=0.01))
    ent = torch.rand(logp.shape, dtype=D)
    clean, _ = algo.loss(_inputs(logp, old, mask, adv, ref, entropy=ent, token_weights=torch.ones_like(ent)))
    (g_clean,) = torch.autograd.grad(clean, logp)

    pad = ~mask.bool()
    dirty_logp = torch.where(pad, torch.full_like(logp, float("nan")), logp.detach()).requires_grad_(True)
    junk = lambda x, v: torch.where(pad, torch.full_like(x, v), x)  # noqa: E731
    dirty, stats = algo.loss(_inputs(dirty_logp, junk(old, float("inf")), mask, adv, junk(ref, -1e30),
                                     entropy=junk(ent, float("nan")), token_weights=junk(torch.ones_like(ent), 1e30)))
    (g_dirty,) = torch.autograd.grad(dirty, dirty_logp)
    assert torch.isfinite(dirty) and torch.isfinite(g_dirty).all()
    assert (g_dirty[pad] == 0).all()
    torch.testing.assert_close(dirty, clean)
    torch.testing.assert_close(g_dirty, g_clean)
    assert all(torch.isfinite(v) and not v.requires_grad and v.dim() == 0 for v in stats.values())


def test_k3_kl_term_zero_with_zero_gradient_at_reference():
    logp, old, _, adv, mask = _batch()
    base, _ = GRPO(GRPOParams()).loss(_inputs(logp, old, mask, adv))
    with_kl, stats = GRPO(GRPOParams(kl_coef=1.0)).loss(_inputs(logp, old, mask, adv, ref=logp.detach().clone()))
    (g0,) = torch.autograd.grad(base, logp)
    (g1,) = torch.autograd.grad(with_kl, logp)
    assert float(stats["kl"]) == 0.0
    torch.testing.assert_close(with_kl, base)
    torch.testing.assert_close(g1, g0)


def test_kl_and_entropy_terms_add_as_documented():
    logp, old, ref, adv, mask = _batch()
    ent = torch.rand(logp.shape, dtype=D)
    base, _ = GRPO(GRPOParams()).loss(_inputs(logp, old, mask, adv))
    full, stats = GRPO(GRPOParams(kl_coef=0.5, entropy_coef=0.1)).loss(_inputs(logp, old, mask, adv, ref, entropy=ent))
    d = ref - logp.detach()
    k3 = torch.exp(d) - d - 1
    n = float(mask.sum())
    expected = base + 0.5 * (k3 * mask).sum() / n - 0.1 * (ent * mask).sum() / n
    torch.testing.assert_close(full, expected)
    torch.testing.assert_close(stats["kl"], (k3 * mask).sum() / n)


def test_missing_reference_or_entropy_raises():
    logp, old, _, adv, mask = _batch()
    with pytest.raises(ValueError, match="ref_logp"):
        GRPO(GRPOParams(kl_coef=0.1)).loss(_inputs(logp, old, mask, adv))
    with pytest.raises(ValueError, match="entropy"):
        GRPO(GRPOParams(entropy_coef=0.1)).loss(_inputs(logp, old, mask, adv))


def test_clip_fraction_stat():
    old = torch.zeros(1, 4, dtype=D)
    logp = torch.log(torch.tensor([[1.0, 1.5, 0.5, 2.0]], dtype=D)).requires_grad_(True)
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]], dtype=D)
    _, stats = GRPO(GRPOParams()).loss(_inputs(logp, old, mask, torch.tensor([1.0], dtype=D)))
    assert float(stats["clip_fraction"]) == pytest.approx(1 / 3)  # only ratio 1.5 (A > 0); ratio 2.0 is padding


# ---- registry and params -------------------------------------------------------------------------------------

def test_registry_and_needs_reference():
    cls = algorithm_class("grpo")
    assert cls is GRPO and cls.Params is GRPOParams and cls.name == "grpo"
    assert not cls(cls.Params()).needs_reference and cls(cls.Params(kl_coef=0.01)).needs_reference
    with pytest.raises(KeyError, match="no_such_algo"):
        algorithm_class("no_such_algo")


@pytest.mark.parametrize(
    "kwargs,field",
    [({"clip_eps": 0.0}, "clip_eps"), ({"clip_eps": 1.5}, "clip_eps"), ({"clip_eps_high": -0.1}, "clip_eps_high"),
     ({"loss_aggregation": "sum"}, "loss_aggregation"), ({"kl_coef": -1.0}, "kl_coef"),
     ({"kl_estimator": "k9"}, "kl_estimator"), ({"kl_clamp": 0.0}, "kl_clamp"),
     ({"entropy_coef": -0.1}, "entropy_coef")],
)
def test_params_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        GRPOParams(**kwargs)
    assert GRPOParams(clip_eps_high=0.28).eps_high == 0.28 and GRPOParams().eps_high == 0.2
