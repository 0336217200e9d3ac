"""P3O (design/algorithms.md §1): pairs, KL-shaped rewards, V1/V2 clipped pairwise loss, global pair counts."""

import math

import pytest
import torch

from alignrl.algorithms import CountInputs, PolicyInputs, ShapingInputs, algorithm_class
from alignrl.algorithms.grpo import GRPO, GRPOParams
from alignrl.algorithms.p3o import (
    P3O,
    P3OParams,
    num_pairs,
    p3o_pair_loss,
    pair_indices,
    sequence_log_ratio,
    trajectory_kl_reward,
)
from alignrl.algorithms.rloo import RLOO, RLOOParams

D = torch.float64
VARIANTS = ["sep", "joint"]


def _batch(sizes=(3, 3, 2), t=7, seed=0, noise=0.2, dtype=D):
    """Groups of the given sizes (consecutive rows), variable lengths, garbage (NaN) on masked positions."""
    g = torch.Generator().manual_seed(seed)
    b = sum(sizes)
    group_ids = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    lengths[0] = t
    mask = (torch.arange(t)[None] < lengths[:, None]).to(dtype)
    base = -torch.rand(b, t, generator=g, dtype=dtype) * 2
    base = torch.where(mask.bool(), base, torch.full_like(base, float("nan")))
    logp = base.clone().requires_grad_(True)
    old = base + noise * torch.randn(b, t, generator=g, dtype=dtype)
    rewards = torch.randn(b, generator=g, dtype=dtype)
    return logp, old, mask, rewards, group_ids


def _inputs(logp, old, mask, rewards, group_ids, counts, advantages=None):
    return PolicyInputs(
        logp=logp, old_logp=old, mask=mask, advantages=torch.zeros(mask.shape[0], dtype=mask.dtype)
        if advantages is None else advantages, rewards=rewards, group_size=int(torch.bincount(group_ids).max()),
        num_tokens=float(mask.sum()), num_sequences=float(mask.shape[0]), max_tokens=mask.shape[1],
        group_ids=group_ids, counts=counts, per_sample={"shaped_reward": rewards})


def _run(algo, logp, old, mask, rewards, group_ids, splits=None):
    """What the learner does: global counts summed over micro-batches first, then the sum of micro-batch losses."""
    splits = splits or [list(range(mask.shape[0]))]
    micro = [torch.tensor(rows) for rows in splits]
    counts: dict[str, float] = {}
    for rows in micro:
        c = algo.counts(CountInputs(mask=mask[rows], advantages=torch.zeros(len(rows)), rewards=rewards[rows],
                                    group_ids=group_ids[rows], per_sample={"shaped_reward": rewards[rows]},
                                    per_token={}))
        for k, v in c.items():
            counts[k] = counts.get(k, 0.0) + float(v)
    total = 0.0
    for rows in micro:
        loss, _ = algo.loss(_inputs(logp[rows], old[rows], mask[rows], rewards[rows], group_ids[rows], counts))
        total = total + loss
    (grad,) = torch.autograd.grad(total, logp)
    return total.detach(), grad


def _seq(x, mask):
    return torch.where(mask.bool(), x, torch.zeros_like(x)).sum(-1)


# ---- 1. shift invariance ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("delta_scale", ["none", "batch_std"])
def test_shift_invariance_bit_identical(variant, delta_scale):
    """r -> r + c(x) per group leaves loss and gradient bit-identical (dyadic values: the float sums are exact),
    through shape (KL folded in with beta = 0.5) and the loss."""
    logp, old, mask, _, group_ids = _batch(sizes=(3, 3, 3), seed=1)
    rewards = torch.tensor([[0.25, -1.0, 0.5], [2.0, 2.0, -0.75], [0.0, 1.5, -0.5]], dtype=D)
    sampler = torch.full_like(mask, -0.5)
    ref = sampler - torch.tensor([0.25, -0.125, 0.5, 0.0, 0.75, -0.25, 0.125], dtype=D)
    algo = P3O(P3OParams(variant=variant, kl_coef=0.5, delta_scale=delta_scale))
    shift = torch.tensor([[3.0], [-1.5], [64.0]], dtype=D)
    results = []
    for r in (rewards, rewards + shift):
        shaped = algo.shape(ShapingInputs(rewards=r, mask=mask, sampler_logp=sampler, ref_logp=ref))
        results.append(_run(algo, logp, old, mask, shaped.per_sample["shaped_reward"].flatten(), group_ids))
        results[-1] += (shaped.advantages,)
    for a, b in zip(*results):
        assert torch.equal(a, b)
    # arbitrary floats: equal up to the rounding of r + c
    _, _, _, r, _ = _batch(sizes=(3, 3, 3), seed=2)
    c = torch.repeat_interleave(torch.tensor([0.37, -12.3, 5.1], dtype=D), 3)
    (l0, g0), (l1, g1) = _run(algo, logp, old, mask, r, group_ids), _run(algo, logp, old, mask, r + c, group_ids)
    torch.testing.assert_close(l0, l1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g0, g1, rtol=1e-12, atol=1e-12)


# ---- 2. gradient at rho = 1 is the pairwise policy gradient -----------------------------------------------------

@pytest.mark.parametrize("variant", ["sep", "joint", "unclipped"])
def test_on_policy_gradient_is_pairwise_policy_gradient(variant):
    """At old = current, grad of V1, V2 and the unclipped Delta (rho_i - rho_j)/2 all equal the gradient of
    -(1/N_pairs) sum (Delta/2)(S_i - S_j)."""
    logp, _, mask, rewards, group_ids = _batch(sizes=(2, 4, 3), seed=3)
    old = logp.detach()
    i, j = pair_indices(group_ids)
    n = i.numel()
    s = _seq(logp, mask)
    (expected,) = torch.autograd.grad(-((rewards[i] - rewards[j]) / 2 * (s[i] - s[j])).sum() / n, logp)
    if variant == "unclipped":
        rho = sequence_log_ratio(logp, old, mask).exp()
        (grad,) = torch.autograd.grad(-((rewards[i] - rewards[j]) * (rho[i] - rho[j]) / 2).sum() / n, logp)
    else:
        _, grad = _run(P3O(P3OParams(variant=variant)), logp, old, mask, rewards, group_ids)
    torch.testing.assert_close(grad, expected)
    assert grad.abs().sum() > 0


# ---- 3. swap symmetry -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_swap_symmetry(variant):
    g = torch.Generator().manual_seed(4)
    lr_i, lr_j = torch.randn(200, generator=g, dtype=D) * 0.4, torch.randn(200, generator=g, dtype=D) * 0.4
    d = torch.randn(200, generator=g, dtype=D)
    a, ca = p3o_pair_loss(lr_i, lr_j, d, 0.2, variant)
    b, cb = p3o_pair_loss(lr_j, lr_i, -d, 0.2, variant)
    assert torch.equal(a, b) and torch.equal(ca, cb)
    assert 0 < float(ca.mean()) < 1  # both clipped and unclipped regimes are exercised
    # batch level: reversing the rows of every group (y1 <-> y2 with their rewards) keeps loss and gradients
    logp, old, mask, rewards, group_ids = _batch(sizes=(2, 2, 3), seed=5, noise=0.3)
    perm = torch.tensor([1, 0, 3, 2, 6, 5, 4])
    algo = P3O(P3OParams(variant=variant))
    loss, grad = _run(algo, logp, old, mask, rewards, group_ids)
    loss_p, grad_p = _swapped(algo, logp, old, mask, rewards, group_ids, perm)
    torch.testing.assert_close(loss, loss_p)
    torch.testing.assert_close(grad, grad_p)


def _swapped(algo, logp, old, mask, rewards, group_ids, perm):
    """Loss/gradient (w.r.t. the original leaf) with the rows permuted inside their groups."""
    leaf = logp.detach().clone().requires_grad_(True)
    permuted = leaf[perm]
    counts = {k: float(v) for k, v in algo.counts(CountInputs(
        mask=mask[perm], advantages=torch.zeros(len(perm)), rewards=rewards[perm], group_ids=group_ids[perm],
        per_sample={"shaped_reward": rewards[perm]}, per_token={})).items()}
    loss, _ = algo.loss(_inputs(permuted, old[perm], mask[perm], rewards[perm], group_ids[perm], counts))
    (grad,) = torch.autograd.grad(loss, leaf)
    return loss.detach(), grad


def test_one_order_joint_form_is_not_swap_symmetric():
    """Why V2 averages both orders: the spec's one-order 1/2 min(R D, clip(R) D) changes under y1 <-> y2."""
    def one_order(lr_i, lr_j, d, eps=0.2):
        r = math.exp(lr_i - lr_j)
        return 0.5 * min(r * d, min(max(r, 1 - eps), 1 + eps) * d)

    lr1, lr2, d = 0.4, 0.0, 1.0
    assert one_order(lr1, lr2, d) != pytest.approx(one_order(lr2, lr1, -d))
    both = 0.5 * (one_order(lr1, lr2, d) + one_order(lr2, lr1, -d))
    value, _ = p3o_pair_loss(torch.tensor([lr1], dtype=D), torch.tensor([lr2], dtype=D), torch.tensor([d], dtype=D),
                             0.2, "joint")
    assert float(value) == pytest.approx(both, rel=1e-12)


# ---- 4. V1 clipping -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("log_rho1,log_rho2,delta,zero1,zero2", [
    (math.log(1.5), 0.0, 1.0, True, False),    # D > 0, rho1 > 1 + eps: y1 is clipped
    (0.0, math.log(0.5), 1.0, False, True),    # D > 0, rho2 < 1 - eps: y2 is clipped
    (math.log(0.5), 0.0, 1.0, False, False),   # D > 0, rho1 < 1 - eps: pessimistic branch, still a gradient
    (math.log(0.5), 0.0, -1.0, True, False),   # D < 0, rho1 < 1 - eps: y1 is clipped
])
def test_v1_clipped_side_gets_zero_gradient(log_rho1, log_rho2, delta, zero1, zero2):
    mask = torch.ones(2, 3, dtype=D)
    logp = torch.full((2, 3), -1.0, dtype=D, requires_grad=True)
    old = logp.detach().clone()
    old[0, 0] -= log_rho1
    old[1, 0] -= log_rho2
    rewards = torch.tensor([delta, 0.0], dtype=D)
    _, grad = _run(P3O(P3OParams(variant="sep", clip_eps=0.2)), logp, old, mask, rewards, torch.tensor([0, 0]))
    assert (grad[0] == 0).all() == zero1 and (grad[1] == 0).all() == zero2


# ---- 5. on-policy equivalence with GRPO (G = 2) and RLOO -------------------------------------------------------

def _policy_grad(algo, logp, mask, adv):
    inputs = PolicyInputs(logp=logp, old_logp=logp.detach(), mask=mask, advantages=adv,
                          rewards=torch.zeros_like(adv), group_size=2, num_tokens=float(mask.sum()),
                          num_sequences=float(mask.shape[0]), max_tokens=mask.shape[1])
    loss, _ = algo.loss(inputs)
    return torch.autograd.grad(loss, logp)[0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_on_policy_equals_grpo_g2_token_sum_times_two(variant):
    """On-policy, P3O (K = 2) = 2 x GRPO(G = 2, scale_rewards=False, loss_aggregation="seq_mean_token_sum").

    GRPO's advantages are +-Delta/2, so its gradient is -sum_groups (Delta/2)(grad S1 - grad S2) / N_seq with
    N_seq = 2P sequences; P3O's is the same sum / N_pairs with N_pairs = P. Factor: N_seq / N_pairs = 2 (in
    general K/(K-1)). Only gradients agree: on-policy P3O's value is 0, GRPO's is -sum_i A_i |y_i| / N_seq.
    """
    logp, _, mask, rewards, group_ids = _batch(sizes=(2, 2, 2, 2), seed=6)
    r = rewards.reshape(4, 2)
    grpo = GRPO(GRPOParams(scale_rewards=False, loss_aggregation="seq_mean_token_sum"))
    shaped = grpo.shape(ShapingInputs(rewards=r, mask=mask, sampler_logp=torch.zeros_like(mask)))
    torch.testing.assert_close(shaped.advantages[:, 0], (r[:, 0] - r[:, 1]) / 2)
    grad_grpo = _policy_grad(grpo, logp, mask, shaped.advantages.flatten())
    _, grad = _run(P3O(P3OParams(variant=variant)), logp, logp.detach(), mask, rewards, group_ids)
    torch.testing.assert_close(grad, 2 * grad_grpo)


def test_on_policy_equals_rloo_token_sum_for_any_k():
    """sum_{i<j} (r_i - r_j)(g_i - g_j)/2 = (K/2) sum_i (r_i - mean) g_i, so over K(K-1)/2 pairs P3O's on-policy
    gradient is RLOO's (advantage K/(K-1)(r_i - mean)) with a per-sequence token sum, factor 1."""
    logp, _, mask, rewards, group_ids = _batch(sizes=(4, 4, 4), seed=7)
    rloo = RLOO(RLOOParams(loss_aggregation="seq_mean_token_sum"))
    adv = rloo.shape(ShapingInputs(rewards=rewards.reshape(3, 4), mask=mask,
                                   sampler_logp=torch.zeros_like(mask))).advantages.flatten()
    _, grad = _run(P3O(P3OParams()), logp, logp.detach(), mask, rewards, group_ids)
    torch.testing.assert_close(grad, _policy_grad(rloo, logp, mask, adv))


# ---- 6. K > 2: all K(K-1)/2 pairs ------------------------------------------------------------------------------

def _clip(x, eps):
    return min(max(x, 1 - eps), 1 + eps)


@pytest.mark.parametrize("variant", VARIANTS)
def test_k_samples_average_over_all_pairs_double_loop(variant):
    eps = 0.2
    logp, old, mask, rewards, group_ids = _batch(sizes=(4, 3, 5), seed=8, noise=0.15)
    algo = P3O(P3OParams(variant=variant, clip_eps=eps))
    loss, _ = _run(algo, logp, old, mask, rewards, group_ids)
    lr = [float(x) for x in sequence_log_ratio(logp.detach(), old, mask)]
    r = [float(x) for x in rewards]
    total, pairs, clipped = 0.0, 0, 0
    for a in range(len(r)):
        for b in range(len(r)):
            if group_ids[a] != group_ids[b] or a == b:
                continue
            d = r[a] - r[b]
            if variant == "sep" and a < b:  # literal V1 over unordered pairs
                ra, rb = math.exp(lr[a]), math.exp(lr[b])
                total += 0.5 * (min(ra * d, _clip(ra, eps) * d) + min(-rb * d, -_clip(rb, eps) * d))
                pairs += 1
                clipped += (_clip(ra, eps) * d < ra * d) + (-_clip(rb, eps) * d < -rb * d)
            elif variant == "joint":  # literal one-order V2 over ordered pairs = both orders of each pair
                ratio = math.exp(lr[a] - lr[b])
                total += 0.5 * min(ratio * d, _clip(ratio, eps) * d)
                pairs += 1
    assert pairs == (6 + 3 + 10) * (1 if variant == "sep" else 2) and num_pairs(group_ids) == 19
    assert float(loss) == pytest.approx(-total / pairs, rel=1e-10)
    if variant == "sep":
        assert 0 < clipped < 2 * pairs  # the comparison covers clipped pairs too


def test_pair_indices_only_pairs_rows_of_one_group():
    i, j = pair_indices(torch.tensor([5, 5, 2, 5, 2, 9]))
    assert list(zip(i.tolist(), j.tolist())) == [(0, 1), (0, 3), (1, 3), (2, 4)]
    assert num_pairs(torch.tensor([5, 5, 2, 5, 2, 9])) == 4 and num_pairs(torch.tensor([], dtype=torch.long)) == 0


# ---- 7. micro-batch split invariance ---------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("delta_scale", ["none", "batch_std"])
def test_micro_batch_split_invariance(variant, delta_scale):
    logp, old, mask, rewards, group_ids = _batch(sizes=(3, 2, 4, 3), seed=9, noise=0.3)
    algo = P3O(P3OParams(variant=variant, delta_scale=delta_scale))
    full = _run(algo, logp, old, mask, rewards, group_ids)
    split = _run(algo, logp, old, mask, rewards, group_ids, splits=[[0, 1, 2], [3, 4, 5, 6, 7, 8], [9, 10, 11]])
    torch.testing.assert_close(full[0], split[0])
    torch.testing.assert_close(full[1], split[1])
    # normalising by the micro-batch's own pairs would not be invariant: the check above can fail
    local = sum(float(_run(algo, logp, old, mask, rewards, group_ids, splits=[rows])[0])
                for rows in ([0, 1, 2], [3, 4, 5, 6, 7, 8], [9, 10, 11]))
    assert local != pytest.approx(float(full[0]))


def test_batch_std_divides_delta_by_its_global_rms():
    logp, old, mask, rewards, group_ids = _batch(sizes=(3, 4), seed=10, noise=0.3)
    i, j = pair_indices(group_ids)
    rms = float((rewards[i] - rewards[j]).square().mean().sqrt())
    scaled = _run(P3O(P3OParams(delta_scale="batch_std")), logp, old, mask, rewards, group_ids)
    plain = _run(P3O(P3OParams()), logp, old, mask, rewards / rms, group_ids)
    torch.testing.assert_close(scaled, plain)
    tripled = _run(P3O(P3OParams(delta_scale="batch_std")), logp, old, mask, 3 * rewards + 1, group_ids)
    torch.testing.assert_close(scaled, tripled)


# ---- 8. KL in the reward; overflow guards ----------------------------------------------------------------------

def test_kl_folded_into_trajectory_reward_with_clamp():
    beta, clamp = 0.1, 5.0
    rewards = torch.tensor([[1.0, 0.0], [0.5, 0.5]], dtype=D)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=D)
    sampler = torch.tensor([[-1.0, -0.5, -30.0, float("nan")], [-0.2, -2.0, 0, 0],
                            [-1.0, -1.0, -1.0, -1.0], [-0.1, float("-inf"), 0, 0]], dtype=D)
    ref = torch.tensor([[-1.5, -0.25, -2.0, 0.0], [-0.3, -1.0, 0, 0],
                        [-1.0, -12.0, -0.5, -1.0], [-0.4, 0.0, 0, 0]], dtype=D)
    expected_kl = []
    for row in range(4):
        expected_kl.append(sum(max(-clamp, min(clamp, float(sampler[row, t] - ref[row, t])))
                               for t in range(4) if mask[row, t]))
    expected = rewards.flatten() - beta * torch.tensor(expected_kl, dtype=D)
    got = trajectory_kl_reward(rewards, sampler, ref, mask, beta, clamp)
    torch.testing.assert_close(got.flatten(), expected)
    algo = P3O(P3OParams(kl_coef=beta, kl_clamp=clamp))
    assert algo.needs_reference
    shaped = algo.shape(ShapingInputs(rewards=rewards, mask=mask, sampler_logp=sampler, ref_logp=ref,
                                      truncated=torch.tensor([[False, True], [False, False]])))
    torch.testing.assert_close(shaped.per_sample["shaped_reward"].flatten(), expected)
    assert shaped.keep.all()  # the truncated sample stays: its penalty lives in the reward
    m = shaped.metrics
    assert m["kl_seq_mean"] == pytest.approx(sum(expected_kl) / 4) and m["kl_clamp_fraction"] == pytest.approx(2 / 10)
    assert m["truncated_fraction"] == 0.25
    with pytest.raises(ValueError, match="ref_logp"):
        algo.shape(ShapingInputs(rewards=rewards, mask=mask, sampler_logp=sampler))


@pytest.mark.parametrize("variant", VARIANTS)
def test_long_sequences_do_not_overflow(variant):
    t = 4096
    mask = torch.ones(2, t)
    logp = torch.full((2, t), -1.0, requires_grad=True)
    old = logp.detach().clone()
    old[0] -= 0.01  # S - S_old = 40.96: clamped to 20
    old[1] += 0.001  # -4.1: inside
    algo = P3O(P3OParams(variant=variant))
    counts = {"pairs": 1.0}
    loss, stats = algo.loss(_inputs(logp, old, mask, torch.tensor([1.0, -2.0]), torch.tensor([0, 0]), counts))
    (grad,) = torch.autograd.grad(loss, logp)
    assert loss.dtype == torch.float32 and torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad[0] == 0).all()  # the clamped row carries no gradient
    assert float(stats["ratio_max"]) == pytest.approx(math.exp(20.0), rel=1e-5)
    assert float(stats["log_ratio_clamp_fraction"]) == 0.5 and float(stats["clip_fraction"]) > 0


def test_bf16_inputs_are_computed_in_float32():
    logp = torch.full((2, 5), -1.0, dtype=torch.bfloat16, requires_grad=True)
    old = (logp.detach().float() - 0.01).to(torch.bfloat16)
    loss, _ = P3O(P3OParams()).loss(_inputs(logp, old, torch.ones(2, 5, dtype=torch.bfloat16),
                                            torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), {"pairs": 1.0}))
    assert loss.dtype == torch.float32


# ---- 9. ties -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("variant", VARIANTS)
def test_tie_gives_zero_gradient_but_counts_in_denominator(variant):
    logp, old, mask, rewards, group_ids = _batch(sizes=(3, 2), seed=11, noise=0.3)
    rewards = rewards.clone()
    rewards[:3] = 0.7  # group 0: three tied pairs
    algo = P3O(P3OParams(variant=variant))
    loss, grad = _run(algo, logp, old, mask, rewards, group_ids)
    assert (grad[:3] == 0).all() and (grad[3:].abs().sum() > 0)
    alone, _ = _run(algo, logp, old, mask, rewards, group_ids, splits=[[3, 4]])  # 1 pair in the denominator
    torch.testing.assert_close(loss, alone / 4)  # 3 tied + 1 = 4 pairs


# ---- contract ----------------------------------------------------------------------------------------------------

def test_shape_advantages_keep_and_errors():
    rewards = torch.tensor([[1.0, 0.0, 0.0], [0.3, 0.3, 0.3], [2.0, -1.0, 0.5]])
    shaped = P3O(P3OParams()).shape(ShapingInputs(rewards=rewards, mask=torch.ones(9, 4),
                                                  sampler_logp=torch.zeros(9, 4)))
    assert shaped.keep.all() and shaped.keep.shape == rewards.shape
    for p in range(3):
        for a in range(3):
            partners = [(rewards[p, a] - rewards[p, b]) / 2 for b in range(3) if b != a]
            assert float(shaped.advantages[p, a]) == pytest.approx(float(sum(partners) / 2))
    assert (shaped.advantages[1] == 0).all()
    k2 = P3O(P3OParams()).shape(ShapingInputs(rewards=rewards[:, :2], mask=torch.ones(6, 4),
                                              sampler_logp=torch.zeros(6, 4)))
    torch.testing.assert_close(k2.advantages[:, 0], (rewards[:, 0] - rewards[:, 1]) / 2)  # +-Delta/2
    torch.testing.assert_close(k2.per_sample["shaped_reward"], rewards[:, :2])
    assert k2.metrics["delta_abs_mean"] == pytest.approx(float((rewards[:, 0] - rewards[:, 1]).abs().mean()))
    assert k2.metrics["tie_fraction"] == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="K >= 2"):
        P3O(P3OParams()).shape(ShapingInputs(rewards=torch.ones(4, 1), mask=torch.ones(4, 2),
                                             sampler_logp=torch.zeros(4, 2)))


def test_loss_requires_shaped_rewards_counts_and_group_ids():
    logp, old, mask, rewards, group_ids = _batch(sizes=(2, 2), seed=12)
    algo = P3O(P3OParams())
    good = _inputs(logp, old, mask, rewards, group_ids, {"pairs": 2.0})
    loss, stats = algo.loss(good)
    assert torch.isfinite(loss) and set(stats) >= {"clip_fraction", "ratio_max", "delta_abs_mean", "policy_loss"}
    with pytest.raises(ValueError, match="shaped_reward"):
        algo.loss(PolicyInputs(**{**good.__dict__, "per_sample": {}}))
    with pytest.raises(ValueError, match="counts"):
        algo.loss(_inputs(logp, old, mask, rewards, group_ids, {}))
    with pytest.raises(ValueError, match="group_ids"):
        algo.loss(PolicyInputs(**{**good.__dict__, "group_ids": None}))
    counts = algo.counts(CountInputs(mask=mask, advantages=rewards, rewards=rewards, group_ids=group_ids,
                                     per_sample={"shaped_reward": rewards}, per_token={}))
    assert set(counts) == {"pairs"} and float(counts["pairs"]) == 2.0
    scaled = P3O(P3OParams(delta_scale="batch_std")).counts(CountInputs(
        mask=mask, advantages=rewards, rewards=rewards, group_ids=group_ids,
        per_sample={"shaped_reward": rewards}, per_token={}))
    expected = float((rewards[0] - rewards[1]) ** 2 + (rewards[2] - rewards[3]) ** 2)
    assert set(scaled) == {"pairs", "delta_sq"} and float(scaled["delta_sq"]) == pytest.approx(expected)


def test_masked_garbage_never_reaches_loss_or_gradient():
    logp, old, mask, rewards, group_ids = _batch(sizes=(3, 3), seed=13, noise=0.3)
    assert torch.isnan(logp.detach()).any()
    old = torch.where(mask.bool(), old, torch.full_like(old, float("inf")))
    loss, grad = _run(P3O(P3OParams(variant="joint")), logp, old, mask, rewards, group_ids)
    assert torch.isfinite(loss) and torch.isfinite(grad).all()
    assert (grad[~mask.bool()] == 0).all()


def test_registry_and_params():
    assert algorithm_class("p3o") is P3O and P3O.Params is P3OParams
    assert not P3O(P3OParams()).needs_reference and P3O(P3OParams(kl_coef=0.05)).needs_reference
    for bad, match in [(dict(variant="v3"), "variant"), (dict(clip_eps=0.0), "clip_eps"),
                       (dict(kl_coef=-1.0), "kl_coef"), (dict(kl_clamp=0.0), "kl_clamp"),
                       (dict(max_log_ratio=100.0), "max_log_ratio"), (dict(delta_scale="std"), "delta_scale")]:
        with pytest.raises(ValueError, match=match):
            P3OParams(**bad)
    with pytest.raises(ValueError, match="variant"):
        p3o_pair_loss(torch.zeros(1), torch.zeros(1), torch.ones(1), 0.2, "both")
