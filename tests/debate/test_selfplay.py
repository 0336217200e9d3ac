"""Self-play through the ordinary RL loop: debate states, the constrained debate_hf engine, one short generation."""

from __future__ import annotations

import json

import torch

from alignrl.debate.debaters import unrevealed_from_prompt
from alignrl.debate.selfplay import run_selfplay, state_rows


def test_state_rows_are_legal_positions(problems):
    rows = state_rows(problems, 200, 4, seed=0)
    assert rows == state_rows(problems, 200, 4, seed=0)
    for r in rows:
        assert len(r["revealed"]) < 4 and len(set(r["revealed"])) == len(r["revealed"])
        assert r["side"] == (r["first"] + len(r["revealed"])) % 2
        assert sorted(unrevealed_from_prompt(r["prompt"]) + r["revealed"]) == list(range(6))
        assert r["answers"][r["gold_side"]] == r["answer"]
    assert {len(r["revealed"]) for r in rows} == {0, 1, 2, 3} and {r["side"] for r in rows} == {0, 1}


def test_debate_engine_samples_only_unrevealed_labels(problems, tokenizer, debater_dir):
    import alignrl.debate.engine  # noqa: F401  (registers debate_hf)
    from alignrl.rollout import SamplingParams, build_engine

    engine = build_engine("debate_hf", {"labels": "0123456789"}, model_path=str(debater_dir), tokenizer=tokenizer)
    rows = state_rows(problems, 30, 4, seed=1)
    groups = engine.generate([tokenizer(r["prompt"])["input_ids"] for r in rows],
                             SamplingParams(n=8, temperature=1.0, max_new_tokens=1, seed=0))
    for r, group in zip(rows, groups):
        picked = {int(c.text) for c in group}
        assert picked <= set(range(6)) - set(r["revealed"])
        assert all(len(c.token_ids) == 1 and c.logprobs[0] <= 0 for c in group)


def test_one_selfplay_generation_trains_through_the_loop(problems, judge_dir, debater_dir, tmp_path):
    recipe = tmp_path / "selfplay.yaml"
    recipe.write_text(open("recipes/debate/selfplay_quickstart.yaml").read())
    final = run_selfplay(recipe, tmp_path / "sp", debater_dir, problems, generations=1, states_per_generation=32,
                         length=4, seed=0, judge=str(judge_dir),
                         overrides=["trainer.max_steps=2", "rollout.prompts_per_step=4", "rollout.n=4",
                                    "trainer.micro_batch_size=16"])
    assert final == tmp_path / "sp" / "gen0" / "checkpoint-000002" and (final / "model.safetensors").is_file()
    metrics = [json.loads(line) for line in (tmp_path / "sp" / "gen0" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2 and all(m["reward/debate_move/illegal"] == 0.0 for m in metrics)
    assert all(-1.0 <= m["reward_mean"] <= 1.0 for m in metrics)
    from safetensors.torch import load_file

    before, after = load_file(str(debater_dir / "model.safetensors")), load_file(str(final / "model.safetensors"))
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the debater learned something
    rewards = json.loads((tmp_path / "sp" / "gen0" / "rewards.json").read_text())
    assert rewards[0]["reward"]["opponent"] == str(debater_dir)  # generation 0 plays its own starting copy
    again = run_selfplay(recipe, tmp_path / "sp", debater_dir, problems, generations=1, states_per_generation=32,
                         length=4, seed=0, judge=str(judge_dir), overrides=["trainer.max_steps=2"])
    assert again == final  # a finished generation is not rerun
