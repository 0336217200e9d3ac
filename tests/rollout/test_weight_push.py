"""Learner-driven weight pushes into an HF engine that owns its weights: full weights and LoRA adapters."""

from __future__ import annotations

import json

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

from alignrl.rollout import HFEngineSettings, SamplingParams, WeightUpdate, build_engine

PROMPTS = ["12+34=", "1+2=", "999+1=", "5+5="]


def train_steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, batch: torch.Tensor, steps: int) -> None:
    """``steps`` optimizer steps of next-token loss on ``batch``."""
    model.train()
    for _ in range(steps):
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def assert_serves(engine, policy, prompts, recompute, completion_logits) -> None:
    """The engine's greedy tokens and sampled log-probs are the policy's (teacher-forced) to 1e-5."""
    greedy = engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=8))
    for prompt, (c,) in zip(prompts, greedy):
        logits = completion_logits(policy, prompt, c.token_ids)
        assert logits.argmax(-1).tolist() == c.token_ids
        assert torch.allclose(torch.tensor(c.logprobs), recompute(policy, prompt, c.token_ids, 0.0), atol=1e-5)
    sampled = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=0))
    for prompt, group in zip(prompts, sampled):
        for c in group:
            assert torch.allclose(torch.tensor(c.logprobs), recompute(policy, prompt, c.token_ids, 1.0), atol=1e-5)


def max_logprob_gap(engine, policy, prompts, recompute) -> float:
    groups = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=8, seed=1))
    return max((torch.tensor(c.logprobs) - recompute(policy, p, c.token_ids, 1.0)).abs().max().item()
               for p, g in zip(prompts, groups) for c in g)


@pytest.fixture()
def lm_batch(encode):
    return torch.tensor(encode(["12+34=046\\boxed{46}", "20+31=051\\boxed{51}"]))


def test_full_weight_push(tokenizer, make_model, encode, lm_batch, recompute, completion_logits, buckets):
    policy = make_model()
    engine = build_engine("hf", HFEngineSettings(share_weights=False), model=policy, tokenizer=tokenizer)
    assert not engine.shares_learner_weights and engine.weights_version == -1
    assert engine.model is not policy
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(engine.model.parameters(), policy.parameters()))
    prompts = encode(PROMPTS)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=1e-2)
    for version in (1, 2, 3):
        train_steps(policy, optimizer, lm_batch, steps=3)
        assert max_logprob_gap(engine, policy, prompts, recompute) > 1e-3  # stale until pushed
        pieces = list(buckets(policy.state_dict().items(), 64 * 1024))
        assert len(pieces) > 1 and "lm_head.weight" in {n for b in pieces for n, _ in b}  # tied head sent too
        engine.load_weights(WeightUpdate(version=version, buckets=iter(pieces)))
        assert engine.weights_version == version
        assert_serves(engine, policy, prompts, recompute, completion_logits)


def test_full_push_rejects_unknown_names_and_shapes(tokenizer, make_model):
    engine = build_engine("hf", HFEngineSettings(share_weights=False), model=make_model(), tokenizer=tokenizer)
    with pytest.raises(KeyError, match="module.model.norm.weight"):
        engine.load_weights(WeightUpdate(version=1, buckets=[[("module.model.norm.weight", torch.ones(64))]]))
    with pytest.raises(ValueError, match="shape"):
        engine.load_weights(WeightUpdate(version=1, buckets=[[("model.norm.weight", torch.ones(3))]]))
    assert engine.weights_version == -1


def test_shared_engine_records_version_without_reading_buckets(tokenizer, make_model):
    policy = make_model()
    engine = build_engine("hf", model=policy, tokenizer=tokenizer)
    assert engine.shares_learner_weights and engine.model is policy

    def never():
        raise AssertionError("a sharing engine must not iterate the buckets")
        yield  # pragma: no cover

    engine.load_weights(WeightUpdate(version=7, buckets=never()))
    assert engine.weights_version == 7


def lora_update(peft_policy, version: int, buckets) -> WeightUpdate:
    config = peft_policy.peft_config["default"].to_dict()
    config = json.loads(json.dumps(config, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))
    return WeightUpdate(version=version, buckets=buckets(get_peft_model_state_dict(peft_policy).items(), 2048),
                        lora=config)


def base_weights(engine) -> dict[str, torch.Tensor]:
    """The engine's base-model tensors under plain Hugging Face names (peft's ``base_layer.`` and adapters dropped)."""
    state = engine.model.get_base_model().state_dict() if hasattr(engine.model, "get_base_model") \
        else engine.model.state_dict()
    return {k.replace(".base_layer.", "."): v.clone() for k, v in state.items() if "lora_" not in k}


def test_lora_pushes_keep_base_bit_identical(tokenizer, make_model, encode, lm_batch, recompute,
                                             completion_logits, buckets):
    base = make_model()
    engine = build_engine("hf", HFEngineSettings(share_weights=False), model=base, tokenizer=tokenizer)
    initial = base_weights(engine)
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                                             task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    prompts = encode(PROMPTS)
    rng_before = torch.get_rng_state()
    engine.load_weights(lora_update(policy, 0, buckets))
    assert torch.equal(torch.get_rng_state(), rng_before)  # injecting the adapters drew no global random numbers
    for version in range(1, 101):
        train_steps(policy, optimizer, lm_batch, steps=1)
        engine.load_weights(lora_update(policy, version, buckets))
    assert engine.weights_version == 100
    after = base_weights(engine)
    assert after.keys() == initial.keys()
    assert all(torch.equal(after[k], initial[k]) for k in initial)
    policy.eval()
    assert_serves(engine, policy, prompts, recompute, completion_logits)
    with policy.disable_adapter():  # the adapters matter: the base alone scores the tokens differently
        assert max_logprob_gap(engine, policy, prompts, recompute) > 1e-3


def test_lora_push_rejects_unknown_adapter_names(tokenizer, make_model, buckets):
    base = make_model()
    engine = build_engine("hf", HFEngineSettings(share_weights=False), model=base, tokenizer=tokenizer)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    update = lora_update(policy, 1, buckets)
    update.buckets = [[("base_model.model.model.layers.0.mlp.up_proj.lora_A.weight", torch.zeros(4, 64))]]
    with pytest.raises(KeyError, match="up_proj"):
        engine.load_weights(update)


def test_full_push_after_lora_drops_the_adapters(tokenizer, make_model, encode, recompute, completion_logits,
                                                 buckets):
    base = make_model()
    engine = build_engine("hf", HFEngineSettings(share_weights=False), model=base, tokenizer=tokenizer)
    policy = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_()
    engine.load_weights(lora_update(policy, 1, buckets))
    full = make_model(seed=3)
    engine.load_weights(WeightUpdate(version=2, buckets=buckets(full.state_dict().items())))
    assert not hasattr(engine.model, "peft_config")
    assert_serves(engine, full, encode(PROMPTS), recompute, completion_logits)


def test_copy_of_a_peft_policy_takes_lora_pushes(tokenizer, make_model, encode, lm_batch, recompute,
                                                 completion_logits, buckets):
    """An engine copied from the learner's already-wrapped peft model keeps its adapters and takes pushes."""
    policy = get_peft_model(make_model(), LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    optimizer = torch.optim.AdamW([p for p in policy.parameters() if p.requires_grad], lr=1e-2)
    train_steps(policy, optimizer, lm_batch, steps=1)  # leaves gradients behind
    engine = build_engine("hf", HFEngineSettings(share_weights=False), model=policy, tokenizer=tokenizer)
    assert engine.model is not policy and all(p.grad is None for p in engine.model.parameters())
    initial = base_weights(engine)
    train_steps(policy, optimizer, lm_batch, steps=3)
    engine.load_weights(lora_update(policy, 4, buckets))
    assert all(torch.equal(base_weights(engine)[k], initial[k]) for k in initial)
    assert_serves(engine, policy, encode(PROMPTS), recompute, completion_logits)
