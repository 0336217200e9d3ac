"""OREAL (design/algorithms.md §2): advantages, filters, token-RM weights and loss, the switches, global counts, and
a loop-level run with the actor freeze."""

from __future__ import annotations

import math

import pytest
import torch

from alignrl.algorithms import CountInputs, PolicyInputs, ShapingInputs, algorithm_class
from alignrl.algorithms.base import AuxInputs
from alignrl.algorithms.oreal import (OREAL, OREALParams, cumulative_mean, oreal_policy_loss, pair_filter, pair_seed,
                                      rloo_advantages, token_rm_loss, token_rm_topk_weights, token_rm_weights)
from alignrl.algorithms.rloo import RLOO, RLOOParams
from alignrl.config import load_config
from alignrl.loop import train
from alignrl.rewards import register_reward

D = torch.float64
REINFORCE = dict(behaviour_cloning=False, reward_shaping=False, pair_filter=False, filter_groups=False, token_rm=False)


@register_reward("test_oreal_parity")
def _parity(prompts, completions, **_):
    """+1 for an even number of characters, -1 otherwise: about half the samples of a group are 'correct'."""
    return [1.0 if len(c) % 2 == 0 else -1.0 for c in completions]


def _rewards(n_pos: list[int], k: int) -> torch.Tensor:
    """[P, K] +-1 rewards with n_pos[g] correct samples in group g, scattered (not all first)."""
    out = -torch.ones(len(n_pos), k, dtype=D)
    for g, n in enumerate(n_pos):
        out[g, torch.randperm(k, generator=torch.Generator().manual_seed(g))[:n]] = 1.0
    return out


def _tokens(b: int, t: int = 6, seed: int = 0):
    """Variable-length mask (NaN garbage on padding) and per-token parameters giving log-probs over 5 tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    mask = (torch.arange(t)[None] < lengths[:, None]).to(D)
    logits = torch.randn(b, t, 5, generator=g, dtype=D)
    tokens = torch.randint(0, 5, (b, t), generator=g)
    return mask, logits, tokens


def _logp(logits: torch.Tensor, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits, -1).gather(-1, tokens[..., None]).squeeze(-1)
    return torch.where(mask.bool(), logp, torch.full_like(logp, float("nan")))


def _shape(algo: OREAL, rewards, mask, step=1, scores=None, ref=None):
    aux = {} if scores is None else {"token_rm": scores}
    return algo.shape(ShapingInputs(rewards=rewards, mask=mask, sampler_logp=torch.zeros_like(mask), ref_logp=ref,
                                    prompt_index=torch.arange(rewards.shape[0]) + 100, step=step, aux_outputs=aux))


def _step_loss(algo, shaped, logits, tokens, mask, ref=None, splits=None):
    """What the learner does: kept rows, micro-batches of whole groups, counts summed first, losses summed."""
    keep = shaped.keep.reshape(-1)
    k = shaped.keep.shape[1]
    group_of = torch.arange(keep.numel()) // k
    kept = keep.nonzero().flatten()
    splits = splits or [sorted(set(group_of[kept].tolist()))]
    micro = [torch.tensor([r for r in kept.tolist() if int(group_of[r]) in groups], dtype=torch.long)
             for groups in splits]
    micro = [rows for rows in micro if len(rows)]  # the learner never builds an empty micro-batch
    per_sample = {name: v.reshape(-1) for name, v in shaped.per_sample.items()}
    adv = shaped.advantages.reshape(-1)
    counts: dict[str, float] = {}
    for rows in micro:
        got = algo.counts(CountInputs(mask=mask[rows], advantages=adv[rows], rewards=adv[rows],
                                      group_ids=group_of[rows], per_sample={n: v[rows] for n, v in per_sample.items()},
                                      per_token={}))
        for name, value in got.items():
            counts[name] = counts.get(name, 0.0) + float(value)
    total = 0.0
    for rows in micro:
        logp = _logp(logits[rows], tokens[rows], mask[rows])
        weights = None if shaped.token_weights is None else shaped.token_weights[rows]
        loss, stats = algo.loss(PolicyInputs(
            logp=logp, old_logp=logp.detach(), mask=mask[rows], advantages=adv[rows], rewards=adv[rows],
            group_size=k, num_tokens=counts["kept_tokens"], num_sequences=counts["kept_sequences"],
            max_tokens=mask.shape[1], ref_logp=None if ref is None else ref[rows], token_weights=weights,
            group_ids=group_of[rows], counts=counts, per_sample={n: v[rows] for n, v in per_sample.items()}))
        total = total + loss
    return total, counts


def _seq_logp(logits, tokens, mask, row):
    logp = torch.log_softmax(logits[row], -1).gather(-1, tokens[row][:, None]).squeeze(-1)
    return (logp * mask[row]).sum()


# ---- §2 test 1: advantages ----------------------------------------------------------------------------------------

def test_rloo_advantages_sum_to_zero_and_match_k16():
    rewards = _rewards([4, 1, 15, 8], 16)
    adv = rloo_advantages(rewards)
    torch.testing.assert_close(adv.sum(-1), torch.zeros(4, dtype=D), atol=1e-12, rtol=0)
    torch.testing.assert_close(adv[0][rewards[0] > 0], torch.full((4,), 24 / 15, dtype=D))
    torch.testing.assert_close(adv[0][rewards[0] < 0], torch.full((12,), -8 / 15, dtype=D))


def test_rloo_guards_single_sample_and_equal_groups():
    assert (rloo_advantages(torch.ones(3, 1)) == 0).all()  # K = 1: no baseline, no division by zero
    assert (rloo_advantages(torch.tensor([[1.0, 1.0, 1.0], [-1.0, -1.0, -1.0]])) == 0).all()
    with pytest.raises(ValueError, match="K >= 2"):
        _shape(OREAL(OREALParams(token_rm=False)), torch.ones(2, 1), torch.ones(2, 3))


def test_advantages_are_computed_before_filtering_and_grpo_option():
    rewards = _rewards([4], 16)
    shaped = _shape(OREAL(OREALParams(token_rm=False)), rewards, torch.ones(16, 3))
    assert int(shaped.keep.sum()) == 2
    kept = shaped.advantages[shaped.keep]
    assert sorted(kept.tolist()) == pytest.approx([-8 / 15, 24 / 15])  # K = 16 advantages, not a K = 2 pair's
    grpo = _shape(OREAL(OREALParams(token_rm=False, advantage="grpo")), rewards, torch.ones(16, 3)).advantages
    centred = rewards - rewards.mean()
    torch.testing.assert_close(grpo, centred / (rewards.std() + 1e-4))


def test_binarize_puts_a_binary_reward_on_the_pm1_scale():
    pm1 = _rewards([4, 0, 9], 16)
    binary, dense = (pm1 > 0).to(D), torch.where(pm1 > 0, 0.3, -0.2).to(D)
    want = _shape(OREAL(OREALParams(token_rm=False)), pm1, torch.ones(48, 2)).advantages
    for rewards in (binary, dense):
        shaped = _shape(OREAL(OREALParams(token_rm=False, binarize=True)), rewards, torch.ones(48, 2))
        torch.testing.assert_close(shaped.advantages, want)
    torch.testing.assert_close(_shape(OREAL(OREALParams(token_rm=False)), binary, torch.ones(48, 2)).advantages,
                               want / 2)


# ---- filters ------------------------------------------------------------------------------------------------------

def test_pair_filter_keeps_one_correct_one_incorrect_per_mixed_group():
    rewards = _rewards([0, 3, 16, 1, 15, 8], 16)
    correct = rewards > 0
    keep = pair_filter(correct, [pair_seed(0, 5, g) for g in range(6)])
    for g in range(6):
        mixed = 0 < int(correct[g].sum()) < 16
        assert int((keep[g] & correct[g]).sum()) == int(mixed) and int((keep[g] & ~correct[g]).sum()) == int(mixed)


def test_pair_draw_depends_only_on_seed_step_and_prompt_row():
    correct = _rewards([8] * 40, 16) > 0
    seeds = [pair_seed(0, 3, 1000 + g) for g in range(40)]
    keep = pair_filter(correct, seeds)
    assert torch.equal(keep, pair_filter(correct, seeds))  # resume: the same draw
    assert torch.equal(keep[10:20], pair_filter(correct[10:20], seeds[10:20]))  # another rank split: the same
    other_step = pair_filter(correct, [pair_seed(0, 4, 1000 + g) for g in range(40)])
    other_seed = pair_filter(correct, [pair_seed(1, 3, 1000 + g) for g in range(40)])
    assert not torch.equal(keep, other_step) and not torch.equal(keep, other_seed)


@pytest.mark.parametrize("pair,groups,expected", [(True, True, [0, 2, 2, 0]), (False, True, [0, 16, 16, 0]),
                                                  (False, False, [16, 16, 16, 16]), (True, False, [0, 2, 2, 0])])
def test_filter_switches(pair, groups, expected):
    rewards = _rewards([0, 4, 12, 16], 16)
    shaped = _shape(OREAL(OREALParams(token_rm=False, pair_filter=pair, filter_groups=groups)), rewards,
                    torch.ones(64, 2))
    assert shaped.keep.sum(-1).tolist() == expected
    assert shaped.metrics["kept_group_fraction"] == pytest.approx(sum(e > 0 for e in expected) / 4)
    assert shaped.metrics["mixed_group_fraction"] == pytest.approx(0.5)


# ---- §2 test 2: the gradient -------------------------------------------------------------------------------------

def test_gradient_is_bc_on_positives_and_half_pg_on_negatives():
    """w = 1, kl_coef = 0: grad = -(A+/N+) grad S(y+) - 0.5 (A-/N-) grad S(y-), summed over kept pairs."""
    rewards = _rewards([4, 9, 16], 16)
    mask, logits, tokens = _tokens(48, seed=1)
    algo = OREAL(OREALParams(token_rm=False, kl_coef=0.0))
    shaped = _shape(algo, rewards, mask)
    logits = logits.requires_grad_(True)
    loss, counts = _step_loss(algo, shaped, logits, tokens, mask)
    (grad,) = torch.autograd.grad(loss, logits)

    keep, adv = shaped.keep.reshape(-1), shaped.advantages.reshape(-1)
    pos, neg = keep & (rewards.reshape(-1) > 0), keep & (rewards.reshape(-1) < 0)
    n_pos, n_neg = float((mask.sum(-1) * pos).sum()), float((mask.sum(-1) * neg).sum())
    assert counts["pos_tokens"] == n_pos and counts["neg_tokens"] == n_neg
    expected = sum(-(adv[r] / n_pos) * _seq_logp(logits, tokens, mask, r) for r in pos.nonzero().flatten()) + sum(
        -0.5 * (adv[r] / n_neg) * _seq_logp(logits, tokens, mask, r) for r in neg.nonzero().flatten())
    (want,) = torch.autograd.grad(expected, logits)
    torch.testing.assert_close(grad, want, rtol=1e-10, atol=1e-12)
    assert int(keep.sum()) == 4 and grad.abs().sum() > 0


@pytest.mark.parametrize("bc,shaping", [(False, False), (True, False), (False, True), (True, True)])
def test_switches_set_the_per_row_gradient_scale(bc, shaping):
    """Row scale of -A grad S: positives 1/N+ (BC) or 1/N (plain PG); negatives 0.5/N- (shaping) or 1/N."""
    rewards = _rewards([3, 5], 8)
    mask, logits, tokens = _tokens(16, seed=2)
    algo = OREAL(OREALParams(token_rm=False, kl_coef=0.0, behaviour_cloning=bc, reward_shaping=shaping,
                             pair_filter=False, positive_factor=1.5))
    shaped = _shape(algo, rewards, mask)
    logp = _logp(logits, tokens, mask).requires_grad_(True)
    adv, correct = shaped.advantages.reshape(-1), rewards.reshape(-1) > 0
    n_pos, n_neg = float((mask.sum(-1) * correct).sum()), float((mask.sum(-1) * ~correct).sum())
    loss, _ = oreal_policy_loss(logp, None, mask, correct, adv, n_pos_tok=n_pos, n_neg_tok=n_neg,
                                n_tok=n_pos + n_neg, pos_factor=1.5, kl_coef=0.0, behaviour_cloning=bc,
                                reward_shaping=shaping)
    (grad,) = torch.autograd.grad(loss, logp)
    scale = torch.where(correct, torch.tensor(1.5 / n_pos if bc else 1 / (n_pos + n_neg), dtype=D),
                        torch.tensor(0.5 / n_neg if shaping else 1 / (n_pos + n_neg), dtype=D))
    torch.testing.assert_close(grad, -(adv * scale)[:, None] * mask)


def test_reinforce_setting_equals_rloo_token_mean_loss_and_gradient():
    """All switches off = RLOO advantages, plain PG, token-mean normalisation, k3 KL over all tokens: on-policy
    exactly RLOO's clipped loss with loss_aggregation token_mean (value and gradient)."""
    rewards = torch.tensor([[1.0, -1.0, -1.0, 1.0], [1.0, 1.0, 1.0, 1.0], [-1.0, 1.0, -1.0, -1.0]], dtype=D)
    mask, logits, tokens = _tokens(12, seed=3)
    ref = _logp(logits + 0.3 * torch.randn(logits.shape, generator=torch.Generator().manual_seed(9), dtype=D),
                tokens, mask)
    algo = OREAL(OREALParams(kl_coef=0.01, **REINFORCE))
    shaped = _shape(algo, rewards, mask, ref=ref)
    assert shaped.keep.all() and shaped.token_weights is None
    logits = logits.requires_grad_(True)
    loss, counts = _step_loss(algo, shaped, logits, tokens, mask, ref=ref, splits=[[0, 1], [2]])
    (grad,) = torch.autograd.grad(loss, logits)

    rloo = RLOO(RLOOParams(loss_aggregation="token_mean", kl_coef=0.01, kl_estimator="k3"))
    adv = rloo.shape(ShapingInputs(rewards=rewards, mask=mask, sampler_logp=torch.zeros_like(mask))).advantages
    torch.testing.assert_close(adv, shaped.advantages)
    logp = _logp(logits, tokens, mask)
    want, _ = rloo.loss(PolicyInputs(logp=logp, old_logp=logp.detach(), mask=mask, advantages=adv.reshape(-1),
                                     rewards=rewards.reshape(-1), group_size=4, num_tokens=float(mask.sum()),
                                     num_sequences=12.0, max_tokens=6, ref_logp=ref))
    (want_grad,) = torch.autograd.grad(want, logits)
    torch.testing.assert_close(loss, want, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, want_grad, rtol=1e-10, atol=1e-14)


# ---- §2 tests 3-5: token weights, KL, token-RM loss ---------------------------------------------------------------

def test_token_weights_at_q_half_and_q_to_one():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w_pos, w_neg = token_rm_weights(torch.zeros(1, 4), mask)
    assert (w_pos == 0).all() and (w_neg == 0).all()
    w_pos, w_neg = token_rm_weights(torch.full((1, 4), 50.0), mask)
    torch.testing.assert_close(w_pos, mask)
    assert (w_neg == 0).all()
    w_pos, w_neg = token_rm_weights(torch.full((1, 4), -50.0), mask)
    assert (w_pos == 0).all()
    torch.testing.assert_close(w_neg, mask)


def test_cumulative_mean_runs_over_valid_tokens_only():
    scores = torch.tensor([[1.0, 3.0, 8.0, float("nan")], [2.0, 100.0, 0.0, 0.0]])  # masked: garbage
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]])
    torch.testing.assert_close(cumulative_mean(scores, mask), torch.tensor([[1.0, 2.0, 4.0, 0.0], [2.0, 0.0, 1.0,
                                                                                                  2 / 3]]))
    q = torch.sigmoid(torch.tensor([1.0, 2.0, 4.0]))
    w_pos, w_neg = token_rm_weights(scores, mask, thr=0.5)
    torch.testing.assert_close(w_pos[0, :3], (2 * q - 1).clamp(min=0))
    assert w_pos[0, 3] == 0 and (w_neg[0] == 0).all()
    w_pos, _ = token_rm_weights(scores, mask, thr=0.6)  # generalisation: [thr, 1] -> [0, 1]
    torch.testing.assert_close(w_pos[0, :3], ((q - 0.6) / 0.4).clamp(min=0))


def test_topk_weights_pick_the_highest_and_lowest_q():
    scores = torch.tensor([[0.0, 4.0, -8.0, 4.0, 0.0]])  # cumulative means 0, 2, -4/3, 0, 0
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    w_pos, w_neg = token_rm_topk_weights(scores, mask, fraction=0.25)  # ceil(0.25 * 4) = 1 token
    assert w_pos.tolist() == [[0.0, 1.0, 0.0, 0.0, 0.0]] and w_neg.tolist() == [[0.0, 0.0, 1.0, 0.0, 0.0]]
    w_pos, _ = token_rm_topk_weights(scores, mask, fraction=1.0)
    assert w_pos.tolist() == [mask[0].tolist()]


def test_shape_puts_w_pos_on_correct_rows_and_w_neg_on_incorrect_rows():
    rewards = torch.tensor([[1.0, -1.0, -1.0, 1.0]])
    mask = torch.ones(4, 3)
    scores = torch.tensor([[2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [-2.0, -2.0, -2.0], [-2.0, -2.0, -2.0]])
    shaped = _shape(OREAL(OREALParams(pair_filter=False)), rewards, mask, scores=scores)
    w = 2 * torch.sigmoid(torch.tensor(2.0)) - 1
    torch.testing.assert_close(shaped.token_weights[:, 0], torch.stack([w, 0 * w, w, 0 * w]))
    assert shaped.metrics["token_weight_pos_mean"] == pytest.approx(float(w) / 2)
    with pytest.raises(ValueError, match="aux_outputs"):
        _shape(OREAL(OREALParams()), rewards, mask)


def test_kl_is_zero_with_zero_gradient_at_the_reference_and_normalised_by_all_tokens():
    mask, logits, tokens = _tokens(4, seed=4)
    logp = _logp(logits, tokens, mask).requires_grad_(True)
    is_pos, zero_adv = torch.tensor([True, False, True, False]), torch.zeros(4, dtype=D)
    loss, parts = oreal_policy_loss(logp, logp.detach().clone(), mask, is_pos, zero_adv, n_pos_tok=3.0,
                                    n_neg_tok=4.0, n_tok=7.0, kl_coef=0.01)
    (grad,) = torch.autograd.grad(loss, logp)
    assert float(loss.detach()) == 0.0 and float(parts["kl"]) == 0.0 and (grad == 0).all()
    ref = logp.detach() - 0.5
    k3 = math.exp(-0.5) + 0.5 - 1  # per token: e^d - d - 1 at d = ref - logp = -0.5
    for normaliser, tokens_norm in (("all", None), ("negative", 4.0)):
        loss, _ = oreal_policy_loss(logp, ref, mask, is_pos, zero_adv, n_pos_tok=3.0, n_neg_tok=4.0,
                                    n_tok=float(mask.sum()), kl_coef=0.01, kl_tokens=tokens_norm)
        want = 0.01 * k3 * float(mask.sum()) / (float(mask.sum()) if tokens_norm is None else tokens_norm)
        assert float(loss.detach()) == pytest.approx(want, rel=1e-12), normaliser


def test_token_rm_loss_is_bce_of_the_masked_mean_score():
    scores = torch.tensor([[1.0, 3.0, float("nan")], [-2.0, 0.0, 0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    got = token_rm_loss(scores, mask, torch.tensor([1.0, 0.0]))
    want = [-math.log(torch.sigmoid(torch.tensor(2.0)).item()), -math.log(1 - torch.sigmoid(torch.tensor(-0.5)).item())]
    torch.testing.assert_close(got, torch.tensor(want), rtol=1e-6, atol=1e-7)


def test_auxiliary_loss_uses_global_kept_samples_and_label_r_positive():
    g = torch.Generator().manual_seed(5)
    scores = torch.randn(6, 4, generator=g, dtype=D).requires_grad_(True)
    mask, rewards = torch.ones(6, 4, dtype=D), torch.tensor([1.0, -1.0, 1.0, 0.0, -1.0, 1.0], dtype=D)  # 0: wrong
    algo = OREAL(OREALParams())

    def part(rows):
        loss, stats = algo.auxiliary_loss("token_rm", AuxInputs(
            outputs=scores[rows], mask=mask[rows], advantages=rewards[rows], rewards=rewards[rows],
            group_ids=torch.tensor(rows) // 2, num_tokens=24.0, num_sequences=6.0, counts={"kept_sequences": 6.0}))
        return loss

    whole = part([0, 1, 2, 3, 4, 5])
    split = part([0, 1]) + part([2, 3, 4, 5])
    torch.testing.assert_close(whole, split)
    want = token_rm_loss(scores, mask, torch.tensor([1.0, 0.0, 1.0, 0.0, 0.0, 1.0], dtype=D)).mean()
    torch.testing.assert_close(whole, want)


# ---- global counts, split invariance, schedule, guards ------------------------------------------------------------

@pytest.mark.parametrize("pair", [True, False])
def test_gradient_independent_of_micro_batch_split(pair):
    rewards = _rewards([4, 9, 2, 6, 16], 8)
    mask, logits, tokens = _tokens(40, seed=6)
    scores = torch.randn(40, 6, generator=torch.Generator().manual_seed(7), dtype=D)
    ref = _logp(logits + 0.2, tokens, mask) - 0.1
    algo = OREAL(OREALParams(pair_filter=pair))
    shaped = _shape(algo, rewards, mask, scores=scores, ref=ref)
    grads = []
    for splits in ([[0, 1, 2, 3, 4]], [[0], [1, 2], [3, 4]], [[3], [2], [1], [0], [4]]):
        leaf = logits.clone().requires_grad_(True)
        loss, counts = _step_loss(algo, shaped, leaf, tokens, mask, ref=ref, splits=splits)
        grads.append((loss.detach(), torch.autograd.grad(loss, leaf)[0]))
    for loss, grad in grads[1:]:
        torch.testing.assert_close(loss, grads[0][0], rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(grad, grads[0][1], rtol=1e-10, atol=1e-14)
    assert grads[0][1].abs().sum() > 0


def test_loss_refuses_counts_that_were_not_summed():
    mask, logits, tokens = _tokens(2, seed=8)
    logp = _logp(logits, tokens, mask)
    inputs = dict(logp=logp, old_logp=logp, mask=mask, advantages=torch.tensor([1.0, -1.0], dtype=D),
                  rewards=torch.tensor([1.0, -1.0], dtype=D), group_size=2, num_tokens=1.0, num_sequences=2.0,
                  max_tokens=6, per_sample={"correct": torch.tensor([1.0, 0.0], dtype=D)})
    algo = OREAL(OREALParams(token_rm=False, kl_coef=0.0))
    with pytest.raises(ValueError, match="lacks"):
        algo.loss(PolicyInputs(**inputs))
    with pytest.raises(ValueError, match="below"):
        algo.loss(PolicyInputs(**inputs, counts={"pos_tokens": 0.5, "neg_tokens": 1.0, "kept_tokens": 1.5,
                                                 "kept_sequences": 2.0}))


def test_freeze_schedule_and_auxiliary_model_spec():
    algo = algorithm_class("oreal")(OREALParams(actor_freeze_steps=2, token_rm_lr=3e-6))
    assert [algo.trains(s) for s in (1, 2, 3)] == [{"token_rm"}, {"token_rm"}, {"token_rm", "policy"}]
    (spec,) = algo.auxiliary_models()
    assert (spec.name, spec.head, spec.init, spec.lr) == ("token_rm", "scalar", "policy", 3e-6)
    plain = OREAL(OREALParams(token_rm=False, actor_freeze_steps=10))
    assert plain.auxiliary_models() == [] and plain.trains(1) == {"policy"}
    assert algo.needs_reference and not OREAL(OREALParams(kl_coef=0.0)).needs_reference


@pytest.mark.parametrize("bad", [dict(threshold=1.0), dict(kl_estimator="k4"), dict(advantage="ppo"),
                                 dict(kl_normaliser="pos"), dict(negative_factor=-1.0), dict(topk_fraction=0.0),
                                 dict(actor_freeze_steps=-1), dict(token_weighting="top")])
def test_params_are_validated(bad):
    with pytest.raises(ValueError):
        OREALParams(**bad)


# ---- learner and loop level --------------------------------------------------------------------------------------

def _learner_gradients(base_recipe, tmp_path, micro_batch_size: int, token_rm: bool, batch=None):
    """One learner update on a batch built as the loop builds it; the gradients every model stepped with."""
    from alignrl.batch import build_batch
    from alignrl.components import build_components
    from alignrl.rewards import RewardInputs
    from alignrl.rollout import SamplingParams

    name = f"mb{micro_batch_size}_{token_rm}"
    c = build_components(load_config(base={
        **base_recipe, "algorithm": {"name": "oreal", "token_rm": token_rm, "actor_freeze_steps": 0},
        "reward": {"functions": [{"name": "test_oreal_parity"}]}, "eval": {"every_steps": 0},
        "rollout": {**base_recipe["rollout"], "prompts_per_step": 6, "n": 4},
        "trainer": {**base_recipe["trainer"], "micro_batch_size": micro_batch_size,
                    "output_dir": str(tmp_path / name)}}))
    if batch is None:
        indices = c.sampler.next_indices()
        groups = c.engine.generate([c.prompts.token_ids[i] for i in indices],
                                   SamplingParams(n=4, max_new_tokens=c.config.rollout.max_new_tokens, seed=3))
        batch = build_batch([c.prompts.token_ids[i] for i in indices], groups,
                            [c.prompts.texts[i] for i in indices], [c.prompts.rows[i] for i in indices],
                            c.tokenizer.pad_token_id)
        batch.rewards = c.rewards.score(RewardInputs(batch.prompts, batch.completions, {}, ["stop"] * batch.size,
                                                     [[] for _ in range(batch.size)])).total
        batch.ref_logp = c.learner.reference_logprobs(batch)
        batch.attach(c.algorithm.shape(ShapingInputs(
            rewards=batch.rewards.view(-1, 4), mask=batch.completion_mask, sampler_logp=batch.sampler_logp,
            ref_logp=batch.ref_logp, prompt_index=torch.tensor(indices), step=1,
            aux_outputs=c.learner.auxiliary_outputs(batch))))
        assert int(batch.keep.sum()) >= 4, "want at least two kept pairs"
    grads: dict[str, dict[str, torch.Tensor]] = {}
    for model_name, model in c.learner.models.items():
        grads[model_name] = {}

        def step(model=model, out=grads[model_name], original=model.step) -> float:
            out.update({k: p.grad.detach().clone() for k, p in model.unwrapped.named_parameters()
                        if p.grad is not None})
            return original()

        model.step = step
    c.learner.update(batch, c.algorithm, step=1, max_tokens=c.config.rollout.max_new_tokens)
    return batch, grads


@pytest.mark.parametrize("token_rm", [False, True])
def test_learner_gradients_do_not_depend_on_micro_batches(base_recipe, tmp_path, token_rm):
    """Whole step in one micro-batch or one kept pair per micro-batch: the same gradients (global N+, N-, N)."""
    batch, whole = _learner_gradients(base_recipe, tmp_path, 32, token_rm)
    _, split = _learner_gradients(base_recipe, tmp_path, 2, token_rm, batch=batch)
    checked = "token_rm" if token_rm else "policy"  # an untrained RM weights every token 0: no policy gradient
    assert whole[checked].keys() == split[checked].keys() and whole[checked]
    for model in whole:
        assert max(float((whole[model][k] - split[model][k]).abs().max()) for k in whole[model]) < 1e-6, model
    assert max(float(g.abs().max()) for g in whole[checked].values()) > 1e-5, "the test needs a gradient"


# ---- loop level ---------------------------------------------------------------------------------------------------

def test_loop_freezes_the_policy_while_the_token_rm_trains(base_recipe):
    config = load_config(base=base_recipe, overrides=[
        "algorithm={name: oreal, actor_freeze_steps: 2, token_rm_lr: 1.0e-2, token_rm_lr_scheduler: constant, "
        "token_rm_warmup_steps: 0, token_rm_weight_decay: 0.0}",
        "trainer.max_steps=3", "trainer.save_steps=0", "eval.every_steps=0",
        "reward.functions=[{name: test_oreal_parity}]",
        "data.sampler={name: pass_rate_buckets, pass_rate_field: null}"])
    seen: dict[int, dict] = {}

    def record(step, components, metrics):
        seen[step] = {name: {k: v.detach().clone() for k, v in m.unwrapped.state_dict().items()}
                      for name, m in components.learner.models.items()}
        seen[step]["metrics"] = metrics
        seen[step]["pass_rate"] = components.sampler.pass_rate.clone()

    from safetensors.torch import load_file

    initial = load_file(f"{base_recipe['model']['path']}/model.safetensors")
    train(config, callbacks=[record])
    for step in (1, 2):
        assert all(torch.equal(seen[step]["policy"][k], initial[k]) for k in initial), step
        assert "kl" not in seen[step]["metrics"] and "aux/token_rm/bce" in seen[step]["metrics"]
    assert any(not torch.equal(seen[3]["policy"][k], initial[k]) for k in initial)
    assert seen[3]["metrics"]["grad_norm"] > 0 and "kl" in seen[3]["metrics"]
    head = "lm_head.weight"
    assert not torch.equal(seen[1]["token_rm"][head], seen[2]["token_rm"][head])
    assert not torch.equal(seen[2]["token_rm"][head], seen[3]["token_rm"][head])
    assert all(seen[s]["metrics"]["kept_group_fraction"] > 0 for s in (1, 2, 3))
    assert int((~torch.isnan(seen[3]["pass_rate"])).sum()) > 0  # the sampler measured pass rates online
