"""The CUDA path: bf16 mixed precision with float32 master weights, the engine on the GPU, SFT in bf16.

Marked ``gpu``: skipped by the default and the CI command; run with ``pytest -m gpu`` on a machine with a CUDA GPU.
"""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from alignrl.batch import build_batch
from alignrl.checkpoint import list_checkpoints
from alignrl.config import load_config
from alignrl.learner.forward import token_logprobs
from alignrl.logging.metrics import read_metrics
from alignrl.loop import train
from alignrl.quickstart.task import make_demonstrations
from alignrl.quickstart.tiny_model import build_model, build_tokenizer
from alignrl.rollout import SamplingParams, build_engine

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def test_bf16_run_learns_with_float32_master_weights(base_recipe):
    config = load_config(base=base_recipe, overrides=[
        "reward.functions=[{name: test_sevens}]", "trainer.max_steps=12", "trainer.lr=1e-2", "rollout.n=8",
        "rollout.prompts_per_step=8", "trainer.micro_batch_size=16", "trainer.save_steps=12",
        "eval.every_steps=0", "algorithm.kl_coef=0.05"])
    assert config.trainer.mixed_precision == "auto" and config.model.dtype == "auto"
    run = train(config)
    records = read_metrics(run / "metrics.jsonl")
    rewards = [r["reward_mean"] for r in records]
    assert sum(rewards[-3:]) / 3 > 2 * sum(rewards[:3]) / 3, rewards
    # bf16 autocast in both the sampler and the learner: their log-probs of the sampled tokens stay close
    assert max(r["sampler_logp_diff"] for r in records) < 0.05
    saved = load_file(list_checkpoints(run)[-1] / "model.safetensors")
    assert {t.dtype for t in saved.values()} == {torch.float32}
    # the reference runs under the policy's autocast: before any update the KL is exactly 0, as on CPU
    assert records[0]["kl"] == 0.0


def test_engine_on_gpu_matches_learner_logprobs():
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, preset="test", seed=0).cuda()
    engine = build_engine("hf", model=model, tokenizer=tokenizer)
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in ["482+396=", "10+20=", "1+1="]]
    torch.manual_seed(0)
    groups = engine.generate(prompts, SamplingParams(n=4, temperature=0.8, max_new_tokens=12))
    batch = build_batch(prompts, groups, ["a", "b", "c"], [{}, {}, {}], tokenizer.pad_token_id)
    with torch.no_grad():
        logp, _ = token_logprobs(model, batch, 0.8)
    mask = batch.completion_mask.bool()
    assert torch.allclose(logp.cpu()[mask], batch.sampler_logp[mask], atol=1e-3)


def test_sft_in_bf16_on_gpu(tmp_path):
    from alignrl.sft import SFTParams, run_sft

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, preset="test", seed=0)
    rows = make_demonstrations(512, seed=0)
    params = SFTParams(learning_rate=3e-3, max_steps=30, per_device_train_batch_size=64, logging_steps=5,
                       progress_bar=False)
    run_sft(model, tokenizer, rows, tmp_path / "bc", params)
    state = json.loads((tmp_path / "bc" / "trainer_state.json").read_text())
    losses = [h["loss"] for h in state["log_history"] if "loss" in h]
    assert losses[-1] < 0.6 * losses[0], losses
