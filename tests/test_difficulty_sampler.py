"""pass_rate_buckets: prompts repeated by pass-rate bucket, offline or online rates, exact resume."""

from __future__ import annotations

import io
import math
from collections import Counter

import pytest
import torch

from alignrl.config import load_config
from alignrl.difficulty_sampler import PassRateBucketParams, PassRateBucketSampler, bucket_repeats, epoch_order
from alignrl.sampling import sampler_class

NAN = math.nan


def _sampler(rates=None, per_step=4, seed=0, shuffle=True, **params) -> PassRateBucketSampler:
    rows = None if rates is None else [{"prompt": str(i), "pass_rate": r} for i, r in enumerate(rates)]
    size = len(rates) if rates is not None else params.pop("size")
    return PassRateBucketSampler(PassRateBucketParams(**params), size, per_step, seed, shuffle, rows=rows)


def _take(sampler, steps: int) -> list[list[int]]:
    return [sampler.next_indices() for _ in range(steps)]


def test_bucket_repeats_edges_and_prior():
    rates = torch.tensor([0.0, 0.19, 0.2, 0.59, 0.6, 0.79, 0.8, 1.0, NAN], dtype=torch.float64)
    edges, repeats = [0.0, 0.2, 0.6, 0.8], [6, 4, 2]
    assert bucket_repeats(rates, edges, repeats).tolist() == [6, 6, 4, 4, 2, 2, 0, 0, 6]
    assert bucket_repeats(rates, edges, repeats, prior=0.7).tolist()[-1] == 2
    assert bucket_repeats(rates, edges, repeats, prior=None).tolist()[-1] == 1
    assert bucket_repeats(rates, [0.0, 0.5, 1.01], [1, 3]).tolist() == [1, 1, 1, 3, 3, 3, 3, 3, 1]


def test_one_epoch_holds_each_prompt_its_bucket_count_and_drops_easy_ones():
    rates = [0.1, 0.9, 0.3, 0.7, 0.8, 0.0, 0.55, 1.0]
    sampler = _sampler(rates, per_step=3)
    expected = {0: 6, 2: 4, 3: 2, 5: 6, 6: 4}
    total = sum(expected.values())  # 22
    picked = [i for step in _take(sampler, 22) for i in step]  # 66 picks = 3 epochs exactly
    assert len(picked) == 3 * total
    for epoch in range(3):
        assert Counter(picked[epoch * total:(epoch + 1) * total]) == Counter(expected)
    assert picked[:total] != picked[total:2 * total]  # each epoch is reshuffled
    assert sampler.epoch == pytest.approx(3.0)
    assert not sampler.observes


def test_shuffle_off_goes_round_robin():
    assert epoch_order(torch.tensor([2, 0, 3, 1]), seed=0, epoch=0, shuffle=False).tolist() == [0, 2, 3, 0, 2, 2]
    sampler = _sampler([0.1, 0.9, 0.3], per_step=2, shuffle=False, repeats=[3, 2, 1])
    assert _take(sampler, 3) == [[0, 2], [0, 2], [0, 0]]  # epoch [0, 2, 0, 2, 0] then the next begins


def test_order_depends_on_seed_and_epoch_only():
    reps = torch.full((50,), 3)
    assert torch.equal(epoch_order(reps, 1, 2), epoch_order(reps, 1, 2))
    assert not torch.equal(epoch_order(reps, 1, 2), epoch_order(reps, 1, 3))
    assert not torch.equal(epoch_order(reps, 1, 2), epoch_order(reps, 2, 2))


def test_offline_rates_are_checked():
    with pytest.raises(ValueError, match="no row has the column 'pass_rate'"):
        PassRateBucketSampler(PassRateBucketParams(), 2, 1, 0, rows=[{"prompt": "a"}, {"prompt": "b"}])
    with pytest.raises(ValueError, match="row 1"):
        _sampler([0.1, 1.5])
    with pytest.raises(ValueError, match="row 0"):
        _sampler(["hard", 0.1])
    with pytest.raises(ValueError, match="outside the buckets"):
        _sampler([0.9, 1.0])
    with pytest.raises(RuntimeError, match="none were attached"):
        PassRateBucketSampler(PassRateBucketParams(), 3, 1, 0).next_indices()
    sampler = _sampler([None, 0.9], per_step=7)  # a null cell takes the prior (hardest bucket: x6)
    assert sampler.next_indices() == [0] * 7 and sampler.epoch == pytest.approx(1 + 1 / 6)


@pytest.mark.parametrize("bad", [dict(edges=[0.2, 0.1]), dict(edges=[0.0, 0.5], repeats=[1, 2]),
                                 dict(repeats=[1, -1, 2]), dict(prior=1.5), dict(ema=1.0)])
def test_params_are_validated(bad):
    with pytest.raises(ValueError):
        PassRateBucketParams(**bad)


def test_online_rates_from_rewards_of_all_ranks_change_the_next_epoch():
    sampler = _sampler(size=4, per_step=4, pass_rate_field=None, prior=None)
    assert sampler.observes
    first = sampler.next_indices()
    assert sorted(first) == [0, 1, 2, 3]  # never measured, prior null: once each
    rewards = {0: [1.0, 1.0, 1.0, 1.0], 1: [-1.0, -1.0, -1.0, -1.0], 2: [1.0, 1.0, -1.0, 0.0], 3: [0.5, 1, 1, 1]}
    sampler.observe(first, torch.tensor([rewards[i] for i in first]))
    assert sampler.pass_rate.tolist() == [1.0, 0.0, 0.5, 1.0]
    second = [i for step in _take(sampler, 3) for i in step]  # next epoch: 1 x6, 2 x4 (0 and 3 too easy)
    assert Counter(second[:10]) == Counter({1: 6, 2: 4})
    sampler.observe([1, 1, 2], torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, -1.0], [-1.0] * 4]))
    assert sampler.pass_rate.tolist() == [1.0, 0.875, 0.0, 1.0]  # repeats within one step are pooled


def test_online_ema_and_all_easy_fallback():
    sampler = _sampler(size=2, per_step=2, pass_rate_field=None, ema=0.5)
    sampler.observe([0, 1], torch.tensor([[1.0, -1.0], [1.0, 1.0]]))
    sampler.observe([0, 1], torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    assert sampler.pass_rate.tolist() == [0.75, 1.0]
    sampler.observe([0], torch.tensor([[1.0, 1.0]]))
    with pytest.warns(UserWarning, match="outside the buckets"):
        assert sorted(sampler.next_indices()) == [0, 1]


@pytest.mark.parametrize("online", [False, True])
def test_state_round_trip_gives_identical_future_picks(online):
    rates = [0.05, 0.3, 0.65, 0.9, 0.15, 0.45, None]
    make = (lambda: _sampler(size=7, per_step=5, pass_rate_field=None, seed=3)) if online else (
        lambda: _sampler(rates, per_step=5, seed=3))
    g = torch.Generator().manual_seed(0)

    def run(sampler, steps):
        out = []
        for _ in range(steps):
            picked = sampler.next_indices()
            sampler.observe(picked, torch.where(torch.rand(len(picked), 4, generator=g) < 0.4, 1.0, -1.0))
            out.append(picked)
        return out

    a = make()
    run(a, 9)
    buffer = io.BytesIO()
    torch.save(a.state_dict(), buffer)  # what a checkpoint does
    state = torch.load(io.BytesIO(buffer.getvalue()), weights_only=False)
    g_state = g.get_state()
    expected = run(a, 15)  # crosses epoch boundaries
    b = PassRateBucketSampler(a.params, 7, 5, 3)  # a fresh process: no rows attached before the state
    b.load_state_dict(state)
    g.set_state(g_state)
    assert run(b, 15) == expected
    assert torch.equal(a.pass_rate.nan_to_num(-1), b.pass_rate.nan_to_num(-1)) and a.epoch == b.epoch


def test_registered_and_configurable_from_a_recipe(base_recipe):
    assert sampler_class("pass_rate_buckets") is PassRateBucketSampler
    config = load_config(base=base_recipe, overrides=[
        "data.sampler={name: pass_rate_buckets, edges: [0.0, 0.5, 1.01], repeats: [3, 1], pass_rate_field: null}"])
    params = config.data.sampler.params
    assert (params.edges, params.repeats, params.pass_rate_field) == ([0.0, 0.5, 1.01], [3, 1], None)
