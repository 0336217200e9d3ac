"""The `bt_rm` reward: scores equal the model's own, normalisation, state, errors, and a short RL run with it."""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from alignrl.rewards import RewardContext, RewardError, RewardInputs, build_reward


def _inputs(prompts, completions, **columns):
    n = len(completions)
    return RewardInputs(list(prompts), list(completions), {k: list(v) for k, v in columns.items()}, ["stop"] * n,
                        [[0]] * n)


def _context():
    return RewardContext(device=torch.device("cpu"), accelerator=None, tokenizer=None, engine_factory=None,
                         run_dir=None)


def _direct_scores(folder, texts):
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    out = []
    with torch.no_grad():
        for text in texts:
            ids = tokenizer(text + tokenizer.eos_token, return_tensors="pt")["input_ids"]
            out.append(float(model(input_ids=ids).logits[0, 0]))
    return out


def test_scores_equal_the_model_called_directly(reward_model_dir):
    reward = build_reward("bt_rm", {"path": str(reward_model_dir), "batch_size": 2})
    reward.setup(_context())
    prompts, completions = ["12+34=", "5+5=", "1+1="], ["000\\boxed{46}", "10", "a much longer wrong answer"]
    output = reward.score(_inputs(prompts, completions))
    expected = _direct_scores(reward_model_dir, [p + c for p, c in zip(prompts, completions)])
    assert output.scores == pytest.approx(expected, abs=1e-5)
    assert output.info["raw"] == pytest.approx(expected, abs=1e-5)


def test_prompt_column_and_missing_column(reward_model_dir):
    reward = build_reward("bt_rm", {"path": str(reward_model_dir), "prompt_column": "question"})
    reward.setup(_context())
    output = reward.score(_inputs(["ignored"], ["7"], question=["3+4="]))
    assert output.scores == pytest.approx(_direct_scores(reward_model_dir, ["3+4=7"]), abs=1e-5)
    with pytest.raises(RewardError, match="prompt_column 'question'"):
        reward.score(_inputs(["3+4="], ["7"]))


def test_batch_normalisation_whitens(reward_model_dir):
    reward = build_reward("bt_rm", {"path": str(reward_model_dir), "normalize": "batch"})
    reward.setup(_context())
    scores = torch.tensor(reward.score(_inputs(["1+1="] * 4, ["2", "3", "44", "boxed"])).scores)
    assert float(scores.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(scores.std(unbiased=False)) == pytest.approx(1.0, abs=1e-3)


def test_running_normalisation_state_resumes_exactly(reward_model_dir):
    settings = {"path": str(reward_model_dir), "normalize": "running"}
    first = build_reward("bt_rm", settings)
    first.setup(_context())
    first.score(_inputs(["1+1="] * 3, ["2", "3", "4"]))
    state = json.loads(json.dumps(first.state_dict()))  # what a checkpoint keeps
    resumed = build_reward("bt_rm", settings)
    resumed.setup(_context())
    resumed.load_state_dict(state)
    batch = _inputs(["2+2="] * 2, ["4", "5"])
    assert resumed.score(batch).scores == first.score(batch).scores
    assert state["count"] == 3


def test_bad_settings_and_a_folder_that_is_not_a_reward_model(tmp_path):
    with pytest.raises(RewardError, match="normalize"):
        build_reward("bt_rm", {"path": "x", "normalize": "zscore"})
    from alignrl.quickstart.tiny_model import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    build_model(tokenizer, preset="test").save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reward = build_reward("bt_rm", {"path": str(tmp_path)})
    with pytest.raises(RewardError, match="not a sequence-classification model"):
        reward.setup(_context())


def test_grpo_trains_against_bt_rm_mixed_with_the_verifier(tmp_path, reward_model_dir):
    """The loop runs with a learned reward term mixed with math; both terms are logged."""
    from alignrl.config import load_config
    from alignrl.loop import train
    from alignrl.quickstart.task import make_prompts
    from alignrl.quickstart.tiny_model import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    build_model(tokenizer, preset="test").save_pretrained(tmp_path / "policy")
    tokenizer.save_pretrained(tmp_path / "policy")
    data = tmp_path / "prompts.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in make_prompts(16, 0)))
    base = yaml.safe_load(
        f"""
        model: {{path: {tmp_path / 'policy'}}}
        data: {{train: {data}}}
        rollout: {{prompts_per_step: 4, n: 2, max_new_tokens: 8}}
        algorithm: {{name: grpo}}
        reward:
          functions:
            - {{name: bt_rm, weight: 0.5, kwargs: {{path: {reward_model_dir}, normalize: running}}}}
            - {{name: math, weight: 0.5}}
        trainer: {{output_dir: {tmp_path / 'run'}, max_steps: 2, lr: 1.0e-3, save_steps: 1}}
        """)
    train(load_config(base=base), resume=False)
    metrics = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(metrics) == 2
    assert any(k.startswith("reward/bt_rm") for k in metrics[-1]), sorted(metrics[-1])
    described = json.loads((tmp_path / "run" / "rewards.json").read_text())
    assert "bt_rm" in json.dumps(described)
