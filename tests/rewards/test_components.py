"""Rewards as components: lifecycle, state round trip, weights, ``only=``, output checks, registry errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from rewards_for_tests import CountingReward, RunningNormReward

from alignrl.config.schema import RewardFunctionConfig as R
from alignrl.data import PromptSet
from alignrl.evaluation.core import evaluate_prompts
from alignrl.rewards import (FunctionReward, Reward, RewardContext, RewardError, RewardInputs, RewardOutput,
                             RewardSet, build_reward, register_reward, resolve_reward)
from alignrl.rollout.base import Completion


def inputs(completions: list[str], step: int = 0, **columns) -> RewardInputs:
    n = len(completions)
    return RewardInputs(["p"] * n, completions, {k: list(v) for k, v in columns.items()}, ["stop"] * n,
                        [[1, 2]] * n, step)


def context(tmp_path) -> RewardContext:
    return RewardContext(device=torch.device("cpu"), accelerator=None, tokenizer="tok", engine_factory=None,
                         run_dir=tmp_path, seed=3)


BATCHES = [["777", "1", "72", "7a"], ["x", "77777", "", "17"], ["7", "7", "abc", "1234567"]]


def test_stateful_reward_round_trips_through_state_dict():
    first = RewardSet([R(name="test_running_norm")])
    for batch in BATCHES[:2]:
        first.score(inputs(batch))
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint holds, serialisable
    assert set(state) == {"test_running_norm"} and state["test_running_norm"]["count"] == 8
    resumed = RewardSet([R(name="test_running_norm")])
    resumed.load_state_dict(state)
    fresh = RewardSet([R(name="test_running_norm")])
    after, again, cold = (s.score(inputs(BATCHES[2])) for s in (first, resumed, fresh))
    assert torch.equal(after.total, again.total) and torch.equal(after.parts["test_running_norm"],
                                                                 again.parts["test_running_norm"])
    assert not torch.allclose(after.total, cold.total)  # the state really changes the scores
    assert first.state_dict() == resumed.state_dict()


def test_setup_gets_the_context_and_close_is_called(tmp_path):
    rewards = RewardSet([R(name="test_running_norm"), R(name="test_exact_boxed", weight=0.5)])
    norm = rewards.terms[0].reward
    assert isinstance(norm, RunningNormReward) and isinstance(rewards.terms[1].reward, FunctionReward)
    ctx = context(tmp_path)
    rewards.setup(ctx)
    assert norm.context is ctx and norm.context.run_dir == tmp_path and norm.context.seed == 3
    assert not norm.closed
    with rewards:
        pass
    assert norm.closed
    rewards.close()  # idempotent


def test_weight_zero_terms_are_not_run_unless_asked():
    rewards = RewardSet([R(name="test_counting", weight=2.0, kwargs={"value": 0.5}),
                         R(name="rewards_for_tests:CountingReward", weight=0.0, kwargs={"value": 3.0})])
    trained, held_out = (t.reward for t in rewards.terms)
    assert isinstance(held_out, CountingReward)
    batch = rewards.score(inputs(["a", "b", "c"]))
    assert (trained.calls, held_out.calls) == (1, 0)
    assert set(batch.parts) == {"test_counting"} and batch.total.tolist() == [1.0, 1.0, 1.0]
    assert batch.total.dtype == torch.float32 and batch.total.shape == (3,)
    only = rewards.score(inputs(["a", "b", "c"]), only=["rewards_for_tests:CountingReward"])
    assert (trained.calls, held_out.calls) == (1, 1)
    assert set(only.parts) == {"rewards_for_tests:CountingReward"}
    assert only.parts["rewards_for_tests:CountingReward"].tolist() == [3.0] * 3
    assert only.total.tolist() == [0.0] * 3  # weighted sum of the terms that ran
    both = rewards.score(inputs(["a"]), only=["test_counting", "rewards_for_tests:CountingReward"])
    assert (trained.calls, held_out.calls) == (2, 2) and both.total.tolist() == [1.0]
    with pytest.raises(RewardError, match="no reward 'nope'.*terms: test_counting, rewards_for_tests:Counting"):
        rewards.score(inputs(["a"]), only=["nope"])


def test_info_is_logged_as_means_per_term():
    rewards = RewardSet([R(name="test_counting", kwargs={"value": 2.0}), R(name="test_running_norm", weight=0.1)])
    batch = rewards.score(inputs(["7", "77", "a", "b"]))
    assert batch.info["test_counting/value"] == 2.0
    assert batch.info["test_counting/index"] == pytest.approx(1.5)
    assert batch.info["test_running_norm/raw"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert set(batch.info) == {"test_counting/value", "test_counting/index", "test_running_norm/raw"}
    expected = 2.0 + 0.1 * batch.parts["test_running_norm"]
    assert torch.allclose(batch.total, expected)


def test_function_rewards_get_columns_and_kwargs():
    seen = {}

    @register_reward("test_spy_fn")
    def spy(prompts, completions, answer, finish_reasons, completion_ids, bonus=0.0, **_):
        seen.update(answer=answer, finish=finish_reasons, ids=completion_ids, bonus=bonus)
        return [bonus + (c == a) for c, a in zip(completions, answer)]

    rewards = RewardSet([R(name="test_spy_fn", kwargs={"bonus": 0.5}), R(name="test_exact_boxed", weight=0)])
    batch = rewards.score(inputs(["1", "2"], answer=["1", "3"]))
    assert batch.parts["test_spy_fn"].tolist() == [1.5, 0.5]
    assert seen == {"answer": ["1", "3"], "finish": ["stop", "stop"], "ids": [[1, 2], [1, 2]], "bonus": 0.5}
    assert rewards.score(inputs(["\\boxed{3}"], answer=["3"]), only=["test_exact_boxed"]).total.tolist() == [0.0]
    assert rewards.score(inputs(["\\boxed{3}"], answer=["3"]),
                         only=["test_exact_boxed"]).parts["test_exact_boxed"].tolist() == [1.0]
    with pytest.raises(RewardError, match="reward 'test_spy_fn': kwarg 'bonus' has the name of a dataset column"):
        rewards.score(inputs(["1"], answer=["1"], bonus=[1]))


def test_bad_kwargs_name_the_reward_and_the_key():
    with pytest.raises(RewardError, match="reward 'test_running_norm': unknown keyword argument 'clipp' for "
                                          "RunningNormReward; it accepts: clip, eps"):
        RewardSet([R(name="test_running_norm", kwargs={"clipp": 1.0})])
    with pytest.raises(RewardError, match="reward 'rewards_for_tests:RunningNormReward': unknown keyword "
                                          "argument 'nope'"):
        RewardSet([R(name="rewards_for_tests:RunningNormReward", kwargs={"nope": 1})])
    with pytest.raises(RewardError, match="reward 'test_running_norm': cannot construct.*clip must be > 0"):
        build_reward("test_running_norm", {"clip": -1})
    with pytest.raises(RewardError, match="reward 'rewards_for_tests:BrokenReward': cannot construct.*kind"):
        build_reward("rewards_for_tests:BrokenReward")  # a required argument is missing

    def strict(prompts, completions, scale=1.0):
        return [scale] * len(completions)

    with pytest.raises(RewardError, match="reward 'strict': unknown keyword argument 'scal' for function"):
        FunctionReward("strict", strict, {"scal": 2})
    with pytest.raises(RewardError, match="may not set \\['finish_reasons'\\]"):
        FunctionReward("strict", strict, {"finish_reasons": 2})
    with pytest.raises(RewardError, match="not a subclass of alignrl.rewards.Reward"):
        build_reward("alignrl.data:PromptSet")
    with pytest.raises(RewardError, match="unknown reward 'nope'"):
        RewardSet([R(name="nope")])


@pytest.mark.parametrize("kind, match", [
    ("short", r"reward 'bad' returned 2 scores for 3 completions"),
    ("nan", r"reward 'bad' returned non-finite scores \(inf\) at index 2"),
    ("info_length", r"reward 'bad': info\['extra'\] has 1 values for 3 completions"),
    ("list", r"reward 'bad' must return a RewardOutput"),
    ("raise", r"reward 'bad' raised ZeroDivisionError: boom"),
])
def test_reward_outputs_are_checked(kind, match):
    register_reward("bad")(resolve_reward("rewards_for_tests:BrokenReward"))
    rewards = RewardSet([R(name="bad", kwargs={"kind": kind})])
    with pytest.raises(RewardError, match=match):
        rewards.score(inputs(["a", "b", "c"]))


def test_set_level_errors_and_describe(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        RewardSet([])
    with pytest.raises(RewardError, match="'test_counting' appears more than once"):
        RewardSet([R(name="test_counting"), R(name="test_counting", weight=0)])
    with pytest.raises(ValueError, match="weight 0"):
        RewardSet([R(name="test_counting", weight=0)])
    rewards = RewardSet([R(name="test_running_norm", kwargs={"clip": 2.0}), R(name="test_exact_boxed", weight=0)])
    described = json.loads(json.dumps(rewards.describe()))
    assert described[0] == {"name": "test_running_norm", "weight": 1.0, "kwargs": {"clip": 2.0},
                            "reward": {"class": "rewards_for_tests.RunningNormReward", "eps": 1e-6, "clip": 2.0}}
    assert described[1]["weight"] == 0.0 and described[1]["reward"]["function"] == "rewards_for_tests:exact_boxed"
    with pytest.warns(UserWarning, match="'gone'.*ignored"):
        rewards.load_state_dict({"gone": {"x": 1}})
    with pytest.raises(RewardError, match="keeps no state"):
        rewards.load_state_dict({"test_exact_boxed": {"x": 1}})
    with pytest.raises(RewardError, match="reward 'test_running_norm': cannot load its checkpoint state"):
        rewards.load_state_dict({"test_running_norm": {}})


def test_reward_inputs_are_validated():
    with pytest.raises(ValueError, match="2 completions but 1 prompts"):
        RewardInputs(["p"], ["a", "b"], {}, ["stop"] * 2, [[1]] * 2)
    with pytest.raises(ValueError, match="1 columns\\['answer'\\]"):
        RewardInputs(["p"] * 2, ["a", "b"], {"answer": ["1"]}, ["stop"] * 2, [[1]] * 2)
    made = RewardInputs.from_rows(["p"], ["a"], [{"answer": "1", "prompts": "dropped"}], ["length"], [[1]], step=4)
    assert made.columns == {"answer": ["1"]} and made.step == 4
    assert made.keyword_columns() == {"answer": ["1"], "finish_reasons": ["length"], "completion_ids": [[1]]}


def test_a_reward_without_score_cannot_be_built():
    class NoScore(Reward):
        pass

    with pytest.raises(TypeError):
        NoScore()
    out = RewardOutput([1.0])
    assert out.info == {} and math.isfinite(out.scores[0])


class _Engine:
    """Answers every prompt with `\\boxed{<prompt length in tokens>}`, n times."""

    def generate(self, prompts, params):
        return [[Completion([5, 6], [0.0, 0.0], f"\\boxed{{{len(p)}}}", "stop") for _ in range(params.n)]
                for p in prompts]


def test_evaluation_scores_only_the_chosen_term():
    from alignrl.rollout import SamplingParams

    rewards = RewardSet([R(name="test_counting", kwargs={"value": -1.0}), R(name="test_exact_boxed", weight=0)])
    prompts = PromptSet(rows=[{"answer": "2"}, {"answer": "9"}, {"answer": "1"}], texts=["x", "y", "z"],
                        token_ids=[[1, 2], [1, 2, 3], [1]])
    records = evaluate_prompts(_Engine(), prompts, [0, 1, 2], SamplingParams(n=2), rewards, term="test_exact_boxed",
                               batch_size=2)
    assert rewards.terms[0].reward.calls == 0
    assert [r["correct"] for r in records] == [True, True, False, False, True, True]
    assert [r["index"] for r in records] == [0, 0, 1, 1, 2, 2]
    by_index = evaluate_prompts(_Engine(), prompts, [0], SamplingParams(n=1), rewards, term=0)
    assert rewards.terms[0].reward.calls == 1 and by_index[0]["reward"] == -1.0
