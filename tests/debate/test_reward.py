"""The ``debate`` and ``debate_move`` rewards: λ = 0 runs no debate, λ = 1 is the debate outcome, transcripts are
logged per sample, the state resumes exactly, illegal moves lose, the move reward is zero-sum across sides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alignrl.debate.selfplay import state_rows
from alignrl.rewards import RewardContext, RewardError, RewardInputs, build_reward, registered_rewards


def context(run_dir: Path | None = None, seed: int = 0) -> RewardContext:
    from alignrl.rollout import build_engine

    return RewardContext(device=torch.device("cpu"), accelerator=None, tokenizer=None, engine_factory=build_engine,
                         run_dir=run_dir, seed=seed)


def inputs_of(problems, step: int = 1, wrong_every: int = 3) -> RewardInputs:
    """The gold answer, except every ``wrong_every``-th sample answers the foil, one the baseline, one nothing."""
    completions = []
    for i, p in enumerate(problems):
        answer = p.foil if i % wrong_every == 0 else p.gold
        completions.append("no answer" if i == 1 else f"010\\boxed{{{answer}}}")
    baselines = [p.gold if i == 2 else p.foil for i, p in enumerate(problems)]
    return RewardInputs.from_rows([p.prompt for p in problems], completions,
                                  [{"answer": p.gold, "baseline": b} for p, b in zip(problems, baselines)],
                                  ["stop"] * len(problems), [[1]] * len(problems), step)


def test_registered():
    assert {"debate", "debate_move"} <= set(registered_rewards())


def test_lambda_zero_runs_no_debate_and_loads_nothing(problems, tmp_path):
    """§4 test 3: λ = 0 gives r_env and no debate runs (the judge path does not even exist)."""
    reward = build_reward("debate", {"lam": 0.0, "judge": str(tmp_path / "missing"), "baseline_column": "baseline"})
    reward.setup(context(tmp_path))
    inputs = inputs_of(problems[:12])
    out = reward.score(inputs)
    env = build_reward("math").score(inputs).scores
    assert out.scores == env and reward.judge is None and reward.debaters is None and reward.debates == 0
    assert not (tmp_path / "debate_transcripts.jsonl").exists()


@pytest.mark.parametrize("debater", ["greedy", "random"])
def test_lambda_one_is_the_debate_outcome_and_transcripts_are_logged(problems, judge_dir, tmp_path, debater):
    reward = build_reward("debate", {"lam": 1.0, "judge": str(judge_dir), "baseline_column": "baseline",
                                     "debater": debater, "mode": "win01", "length": 4})
    reward.setup(context(tmp_path))
    inputs = inputs_of(problems[:12])
    out = reward.score(inputs)
    assert out.scores == out.info["debate"]
    assert out.scores[1] == 0.0 and out.info["debated"][1] == 0.0  # no answer: loses, not debated
    assert out.scores[2] == 0.5 and out.info["debated"][2] == 0.0  # same answer as the baseline: a tie
    rows = [json.loads(line) for line in (tmp_path / "debate_transcripts.jsonl").read_text().splitlines()]
    assert len(rows) == 12 and [r["sample"] for r in rows] == list(range(12))
    for i, (row, p) in enumerate(zip(rows, problems[:12])):
        if not row["debated"]:
            continue
        assert len(row["revealed"]) == 4 == len(set(row["revealed"]))
        assert row["units"] == [p.units[j] for j in row["revealed"]]  # verbatim
        assert row["answers"][1] == p.foil and row["judge"] is not None
        a, b = row["judge"]
        assert row["r_debate"] == (1.0 if a > b else 0.0 if a < b else 0.5) == out.scores[i]
    assert reward.debates == sum(r["debated"] for r in rows) == 6  # 0, 3, 6, 9 tie with the baseline; 1, 2 above


def test_mixing_is_one_minus_lambda_env_plus_lambda_debate(problems, judge_dir):
    reward = build_reward("debate", {"lam": 0.3, "judge": str(judge_dir), "baseline_column": "baseline",
                                     "mode": "zero_sum"})
    reward.setup(context())
    out = reward.score(inputs_of(problems[:9]))
    expected = [0.7 * e + 0.3 * d for e, d in zip(out.info["env"], out.info["debate"])]
    assert out.scores == pytest.approx(expected) and set(out.info["debate"]) <= {-1.0, 0.0, 1.0}


def test_state_resumes_exactly(problems, judge_dir, tmp_path):
    """A reward restored from its state_dict scores the next batch exactly as the uninterrupted one does."""
    kwargs = {"lam": 0.5, "judge": str(judge_dir), "baseline_column": "baseline", "debater": "random"}
    first = build_reward("debate", kwargs)
    first.setup(context(tmp_path / "a", seed=3))
    first.score(inputs_of(problems[:20], step=1))
    saved = json.loads(json.dumps(first.state_dict()))  # JSON-able, as a checkpoint stores it
    expected = first.score(inputs_of(problems[20:], step=2, wrong_every=2))
    resumed = build_reward("debate", kwargs)
    resumed.setup(context(tmp_path / "b", seed=3))
    resumed.load_state_dict(saved)
    again = resumed.score(inputs_of(problems[20:], step=2, wrong_every=2))
    assert again.scores == expected.scores and resumed.state_dict() == first.state_dict()
    fresh = build_reward("debate", kwargs)
    fresh.setup(context(tmp_path / "c", seed=3))
    assert fresh.state_dict()["rng"] != saved["rng"]  # without the state, the draws would start over


def test_resume_keeps_each_steps_transcripts_once(problems, judge_dir, tmp_path):
    """Resuming from step 1's state drops the transcript rows of steps played after it (and a line cut short by the
    interruption): the replayed step 2 is logged once."""
    kwargs = {"lam": 1.0, "judge": str(judge_dir), "baseline_column": "baseline", "debater": "random"}
    first = build_reward("debate", kwargs)
    first.setup(context(tmp_path, seed=3))
    first.score(inputs_of(problems[:10], step=1))
    saved = json.loads(json.dumps(first.state_dict()))
    first.score(inputs_of(problems[10:20], step=2))
    log = tmp_path / "debate_transcripts.jsonl"
    with log.open("a") as f:
        f.write('{"step": 3, "sam')  # killed mid-write
    resumed = build_reward("debate", kwargs)
    resumed.setup(context(tmp_path, seed=3))
    resumed.load_state_dict(saved)
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1] * 10
    resumed.score(inputs_of(problems[10:20], step=2))
    assert [json.loads(line)["step"] for line in log.read_text().splitlines()] == [1] * 10 + [2] * 10


def test_baseline_from_a_model_is_generated_once_per_prompt(problems, judge_dir, debater_dir):
    reward = build_reward("debate", {"lam": 1.0, "judge": str(judge_dir), "baseline_model": str(debater_dir),
                                     "baseline_max_new_tokens": 4})
    reward.setup(context())
    inputs = inputs_of(problems[:6])
    reward.score(inputs)
    assert set(reward.baseline_cache) == {p.prompt for p in problems[:6]}
    assert all(v is None for v in reward.baseline_cache.values())  # an untrained model writes no boxed answer


def test_bad_settings_and_columns_name_the_problem(problems, judge_dir):
    with pytest.raises(RewardError, match="needs a judge"):
        build_reward("debate", {"lam": 0.5})
    with pytest.raises(RewardError, match="exactly one of baseline_column and baseline_model"):
        build_reward("debate", {"lam": 0.5, "judge": "j"})
    with pytest.raises(RewardError, match="lam must be in"):
        build_reward("debate", {"lam": 2.0})
    with pytest.raises(RewardError, match="answer_fn 'nope' is not"):
        build_reward("debate", {"lam": 0.0, "answer_fn": "nope"})
    reward = build_reward("debate", {"lam": 1.0, "judge": str(judge_dir), "baseline_column": "nope"})
    reward.setup(context())
    with pytest.raises(RewardError, match="baseline_column 'nope' is not a dataset column"):
        reward.score(inputs_of(problems[:3]))


def move_inputs(rows, completions) -> RewardInputs:
    return RewardInputs.from_rows([r["prompt"] for r in rows], completions, rows, ["length"] * len(rows),
                                  [[1]] * len(rows))


def test_move_reward_is_zero_sum_across_sides_and_illegal_moves_lose(problems, judge_dir):
    from alignrl.debate.debaters import GreedyDebater, MoveState

    reward = build_reward("debate_move", {"judge": str(judge_dir), "opponent": "greedy"})
    reward.setup(context())
    rows = [r for r in state_rows(problems, 40, 4, seed=0) if r["revealed"] == []][:6]
    first_moves = [str(i % 6) for i in range(len(rows))]
    # the next state of the same game: the other side answers with the move the (deterministic) greedy
    # continuation makes, so both games play out identically and the two movers get opposite rewards
    greedy = GreedyDebater(reward.judge)
    follow, replies = [], []
    for r, u in zip(rows, first_moves):
        state = MoveState(r["units"], tuple(r["answers"]), 1 - r["side"], [int(u)], [], 3)
        follow.append({**r, "side": 1 - r["side"], "revealed": [int(u)]})
        replies.append(str(greedy.choose([state])[0]))
    a = reward.score(move_inputs(rows, first_moves)).scores
    b = reward.score(move_inputs(follow, replies)).scores
    assert set(a) <= {-1.0, 0.0, 1.0} and a == [-x for x in b] and any(a)
    out = reward.score(move_inputs(rows[:3], ["x", first_moves[1], "7"]))
    assert out.scores[0] == -1.0 and out.info["illegal"] == [1.0, 0.0, 1.0]
    revealed = next(r for r in state_rows(problems, 40, 4, seed=1) if r["revealed"])
    assert reward.score(move_inputs([revealed], [str(revealed["revealed"][0])])).info["illegal"] == [1.0]
    with pytest.raises(RewardError, match="lack"):
        reward.score(RewardInputs.from_rows(["p"], ["1"], [{"answer": "1"}], ["stop"], [[1]]))
