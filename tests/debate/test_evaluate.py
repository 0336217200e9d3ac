"""The measurement helpers: accuracy bookkeeping, the judge table's schemes, the policy figures, step costs, the
markdown table; and the whole `alignrl debate table` pipeline on tiny settings (slow)."""

from __future__ import annotations

import json

import pytest

from alignrl.debate.evaluate import Teammate, accuracy, judge_table, policy_figures, step_costs
from alignrl.debate.experiments import render_table
from alignrl.debate.game import Transcript
from alignrl.debate.play import DebateSetup, play_moves


def test_accuracy_counts_ties_half_and_splits_by_kind(problems):
    ts = [Transcript(("1", "2"), 0, outcome=o) for o in (1.0, -1.0, 0.0, 1.0)]
    out = accuracy(ts, problems[:4])
    assert out["all"] == pytest.approx(2.5 / 4)
    kinds = [p.kind for p in problems[:4]]
    dropped = [w for w, k in zip((1, 0, 0.5, 1), kinds) if k == "dropped"]
    assert out["dropped"] == pytest.approx(sum(dropped) / max(len(dropped), 1))


def test_teammate_makes_every_move_for_side_a(problems, fake_judge):
    judge = fake_judge(lambda unit, answer: 1.0 if answer == "G" and unit.startswith("c") else 0.0)
    from alignrl.debate.debaters import GreedyDebater

    greedy = GreedyDebater(judge)
    setups = [DebateSetup(p.units, ("G", "F")) for p in problems[:5]]
    for t in play_moves(setups, (greedy, Teammate(greedy)), 3, [1] * 5):
        assert sorted(t.revealed) == [3, 4, 5]  # every move argues for G: the three carry units


def test_judge_table_has_every_scheme(problems, judge):
    table = judge_table(judge, problems[:12], 4, seed=0)
    assert set(table) == {"full evidence", "random", "isolated", "debate (fixed, greedy)"}
    for row, columns in table.items():
        assert set(columns) == ({"alone"} if row == "full evidence" else {"alone", "confuser"})
        assert all(0.0 <= v <= 1.0 for c in columns.values() for v in c.values())
    # the fixed debaters' opponent is the greedy confuser itself: both columns coincide
    assert table["debate (fixed, greedy)"]["alone"] == table["debate (fixed, greedy)"]["confuser"]


def test_policy_figures_and_step_costs(problems, judge, debater_dir, tmp_path):
    rows = [{"prompt": p.prompt, "answer": p.gold} for p in problems[:6]]
    figures = policy_figures(debater_dir, debater_dir, rows, judge, 4, seed=0)
    # an untrained model writes no boxed answer: no task reward, nothing to debate, justifiability 0
    assert figures == {"task_reward": 0.0, "justifiability": 0.0, "same_as_baseline": 0.0, "debated": 0.0}
    lines = [{"time/generate": 1.0, "time/score": 5.0, "time/update": 1.0, "time/sync": 0.0},
             {"time/generate": 1.0, "time/score": 2.0, "time/update": 1.0, "time/sync": 0.0},
             {"time/generate": 1.0, "time/score": 4.0, "time/update": 1.0, "time/sync": 0.0}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    assert step_costs(tmp_path) == {"step_seconds": 5.0, "score_seconds": 3.0, "steps": 2}


def test_render_table_means_and_ratios():
    def seed(a, t):
        cell = {"all": a, "dropped": a, "spurious": a / 2}
        return {"table": {"random": {"alone": cell, "confuser": cell}},
                "policy": {"0": {"task_reward": t, "justifiability": 0.5, "same_as_baseline": 0.1, "step_seconds": 2.0,
                                 "score_seconds": 0.1},
                           "0.5": {"task_reward": t, "justifiability": 0.7, "same_as_baseline": 0.1,
                                   "step_seconds": 6.0, "score_seconds": 4.0}}}
    text = render_table({0: seed(0.6, 0.9), 1: seed(0.8, 1.0)})
    assert "| random | 70.0 ± 14.1 | 70.0 ± 14.1 | 35.0 ± 7.1 | 35.0 ± 7.1 |" in text
    assert "| 0.5 | 95.0 ± 7.1 | 70.0 ± 0.0 | 10.0 ± 0.0 | 6.00 ± 0.00 | 4.00 ± 0.00 | 3.00 ± 0.00 |" in text


@pytest.mark.slow
def test_debate_table_end_to_end_on_tiny_settings(tmp_path, debater_dir, problems):
    """The whole pipeline with a 3-step judge, one 2-step self-play generation and 2-step policies (a tiny causal
    LM stands in for the BC model)."""
    from alignrl.cli import main

    data = tmp_path / "data0"
    data.mkdir()
    rows = "".join(json.dumps({"prompt": p.prompt, "answer": p.gold}) + "\n" for p in problems)
    (data / "rl_prompts.jsonl").write_text(rows)
    (data / "heldout.jsonl").write_text(rows)
    out = tmp_path / "debate"
    code = main(["debate", "table", "--out", str(out), "--seeds", "0", "--bc", str(debater_dir), "--data",
                 str(tmp_path / "data{seed}"), "--generations", "1", "--eval-problems", "10", "--eval-prompts", "5",
                 "--judge-set", "rm.max_steps=3", "data.train_problems=64", "data.test_problems=8",
                 "--selfplay-set", "trainer.max_steps=2", "rollout.prompts_per_step=4", "rollout.n=2",
                 "--policy-set", "trainer.max_steps=2", "rollout.prompts_per_step=4", "rollout.n=2",
                 "--cost-steps", "1"])
    assert code == 0
    results = json.loads((out / "results.json").read_text())["seeds"]["0"]
    assert "debate (trained, self-play)" in results["table"] and set(results["policy"]) == {"0", "0.5", "1"}
    assert results["policy"]["0"]["steps"] == 1
    assert (out / "seed0" / "policy_lam0.5" / "debate_transcripts.jsonl").is_file()
    assert not (out / "seed0" / "policy_lam0" / "debate_transcripts.jsonl").exists()  # λ = 0: no debate
    cost = json.loads((out / "results.json").read_text())["cost"]
    assert set(cost) == {"0", "0.5", "1"} and cost["0"]["ratio_to_lam0"] == 1.0
    table = (out / "table.md").read_text()
    assert "| debate (trained, self-play) |" in table and "step time ÷ λ=0 |" in table
