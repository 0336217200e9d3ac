"""The RL loop end to end on a tiny model: it learns, logs, evaluates, checkpoints and plots."""

from __future__ import annotations

import json

import torch

from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from alignrl.checkpoint import list_checkpoints
from alignrl.config import load_config
from alignrl.logging.metrics import read_metrics
from alignrl.logging.plot import plot_run
from alignrl.loop import train

STEP_KEYS = {"reward_mean", "reward_std", "pass_rate", "entropy", "response_length", "clip_fraction", "grad_norm",
             "lr", "tokens_per_s", "time/generate", "time/score", "time/update", "time/sync", "loss", "truncated",
             "ratio_max", "response_length_max"}


def test_grpo_climbs_a_dense_reward(base_recipe):
    config = load_config(base=base_recipe, overrides=[
        "reward.functions=[{name: test_sevens}]", "trainer.max_steps=12", "trainer.lr=1e-2", "rollout.n=8",
        "rollout.prompts_per_step=8", "trainer.micro_batch_size=16", "trainer.save_steps=0", "eval.every_steps=0"])
    run = train(config)
    rewards = [m["reward_mean"] for m in read_metrics(run / "metrics.jsonl")]
    assert len(rewards) == 12
    assert sum(rewards[-3:]) / 3 > 2 * sum(rewards[:3]) / 3, rewards


def test_run_folder_contents(base_recipe):
    config = load_config(base=base_recipe, overrides=["trainer.max_steps=5", "trainer.save_steps=1",
                                                      "trainer.save_total_limit=2", "algorithm.kl_coef=0.1",
                                                      "trainer.epochs_per_batch=2"])
    run = train(config)
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5]
    assert STEP_KEYS | {"kl"} <= set(records[0])
    assert {"eval/pass_at_1", "eval/mean_reward"} <= set(records[1])  # every 2 steps and at the end
    assert "eval/pass_at_1" in records[4] and "eval/pass_at_1" not in records[0]
    assert records[0]["lr"] == config.trainer.lr
    # keep the last 2 checkpoints, each a Hugging Face model folder transformers loads unchanged
    checkpoints = list_checkpoints(run)
    assert [c.name for c in checkpoints] == ["checkpoint-000004", "checkpoint-000005"]
    model = AutoModelForCausalLM.from_pretrained(checkpoints[-1])
    saved = load_file(checkpoints[-1] / "model.safetensors")
    assert all((model.state_dict()[k] == v).all() for k, v in saved.items())
    state = json.loads((checkpoints[-1] / "trainer_state.json").read_text())
    assert state["step"] == 5 and state["finished"] and state["models"] == ["policy"]
    assert torch.load(checkpoints[-1] / "state_0.pt", weights_only=False)["sampler"] == {"cursor": 5 * 4}
    assert json.loads((run / "rewards.json").read_text())[0]["name"] == "test_length"
    assert (run / "run_config.yaml").is_file() and (run / "completions.jsonl").is_file()
    png = plot_run(run)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_half_written_checkpoint_is_ignored(base_recipe, tmp_path):
    run = train(load_config(base=base_recipe, overrides=["trainer.max_steps=2", "trainer.save_steps=1"]))
    (run / ".tmp-checkpoint-000003").mkdir()  # what a kill mid-save leaves behind
    (run / ".tmp-checkpoint-000003" / "model.safetensors").write_bytes(b"partial")
    assert list_checkpoints(run)[-1].name == "checkpoint-000002"
    resumed = train(load_config(base=base_recipe, overrides=["trainer.max_steps=3", "trainer.save_steps=1"]),
                    resume=True)
    assert list_checkpoints(resumed)[-1].name == "checkpoint-000003"


def test_overwrite_output_dir_starts_over(base_recipe):
    train(load_config(base=base_recipe, overrides=["trainer.max_steps=2"]))
    run = train(load_config(base=base_recipe, overrides=["trainer.max_steps=1", "trainer.overwrite_output_dir=true"]))
    assert [r["step"] for r in read_metrics(run / "metrics.jsonl")] == [1]


def test_lora_with_reference_kl_and_gradient_checkpointing(base_recipe):
    """LoRA adapters train, the reference is the base with adapters off, and a resume restores the adapters."""
    overrides = ["model.lora={r: 4, alpha: 8}", "model.gradient_checkpointing=true", "algorithm.kl_coef=0.1",
                 "trainer.max_steps=2", "trainer.save_steps=1", "trainer.lr=1e-2", "eval.every_steps=0"]
    run = train(load_config(base=base_recipe, overrides=overrides))
    records = read_metrics(run / "metrics.jsonl")
    assert records[0]["kl"] == 0.0 and records[1]["kl"] > 0.0  # the adapters moved away from the base
    checkpoint = list_checkpoints(run)[-1]
    assert (checkpoint / "adapter_model.safetensors").is_file() and (checkpoint / "adapter_config.json").is_file()
    resumed = train(load_config(base=base_recipe, overrides=[*overrides[:-3], "trainer.max_steps=3",
                                                             "trainer.save_steps=1", "trainer.lr=1e-2"]), resume=True)
    assert [r["step"] for r in read_metrics(resumed / "metrics.jsonl")] == [1, 2, 3]
    assert read_metrics(resumed / "metrics.jsonl")[2]["kl"] > 0.0
