"""LoRA pushes into the vllm engine: adapters reach vLLM as LoRA requests, never merged into the base weights."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

from alignrl.quickstart.tiny_model import build_model
from alignrl.rollout import SamplingParams, VLLMEngineSettings, WeightUpdate, build_engine

pytestmark = pytest.mark.vllm

PROMPTS = ["12+34=", "1+2=", "999+1=", "5+5="]
TOL = 1e-4


@pytest.fixture(scope="module")
def peft_policy(tokenizer):
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], task_type="CAUSAL_LM")
    return get_peft_model(build_model(tokenizer, preset="test", seed=0), config)


@pytest.fixture(scope="module")
def engine(tokenizer, peft_policy):
    built = build_engine("vllm", VLLMEngineSettings(in_process=True), model=peft_policy, tokenizer=tokenizer)
    yield built
    built.close()


def lora_update(peft_policy, version, buckets) -> WeightUpdate:
    config = peft_policy.peft_config["default"].to_dict()
    config = json.loads(json.dumps(config, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))
    return WeightUpdate(version=version, buckets=buckets(get_peft_model_state_dict(peft_policy).items(), 2048),
                        lora=config)


def gap(engine, model, prompts, recompute) -> float:
    groups = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=10, seed=1))
    return max((torch.tensor(c.logprobs) - recompute(model, p, c.token_ids, 1.0)).abs().max().item()
               for p, g in zip(prompts, groups) for c in g)


def test_adapters_are_served_unmerged_push_after_push(engine, peft_policy, encode, recompute, buckets, trainer):
    prompts = encode(PROMPTS)
    batch = torch.tensor(encode(["12+34=046\\boxed{46}", "20+31=051\\boxed{51}"]))
    base_sum = engine.base_checksum()
    with torch.no_grad():  # a non-zero adapter from the start, so it matters from the first push
        for name, p in peft_policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    peft_policy.eval()
    for version in range(1, 6):
        if version > 1:
            trainer(peft_policy, batch, steps=2)
        assert gap(engine, peft_policy, prompts, recompute) > 1e-3  # stale until pushed
        engine.load_weights(lora_update(peft_policy, version, buckets))
        assert engine.weights_version == version
        assert gap(engine, peft_policy, prompts, recompute) < TOL
        assert engine.base_checksum() == base_sum  # base weights untouched: nothing merged
        assert engine.llm.llm_engine.list_loras() == {engine._lora.lora_int_id}  # the previous adapter is gone
    with peft_policy.disable_adapter():  # the adapters matter: the base alone scores the samples differently
        assert gap(engine, peft_policy, prompts, recompute) > 1e-3


def test_full_push_after_lora_drops_the_adapters(engine, tokenizer, encode, recompute, buckets):
    full = build_model(tokenizer, preset="test", seed=3).eval()
    engine.load_weights(WeightUpdate(version=10, buckets=buckets(full.state_dict().items())))
    assert engine.llm.llm_engine.list_loras() == set() and engine._lora is None
    assert gap(engine, full, encode(PROMPTS), recompute) < TOL


def test_adapters_vllm_cannot_serve_are_refused(engine, peft_policy, buckets):
    update = lora_update(peft_policy, 20, buckets)
    update.lora = {**update.lora, "use_dora": True}
    with pytest.raises(ValueError, match="DoRA"):
        engine.load_weights(update)
    update = lora_update(peft_policy, 20, buckets)
    update.lora = {**update.lora, "r": 128}
    with pytest.raises(ValueError, match="max_lora_rank"):
        engine.load_weights(update)
