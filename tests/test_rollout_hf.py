"""The transformers rollout engine: shapes, finish reasons, stop strings, and log-probs equal to the learner's."""

from __future__ import annotations

import pytest
import torch

from alignrl.batch import build_batch
from alignrl.quickstart.tiny_model import build_model, build_tokenizer
from alignrl.rollout import SamplingParams, build_engine


@pytest.fixture(scope="module")
def engine():
    tokenizer = build_tokenizer()
    return build_engine("hf", model=build_model(tokenizer, preset="test", seed=0), tokenizer=tokenizer)


def encode(engine, texts):
    return [engine.tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_groups_shapes_and_finish_reasons(engine):
    torch.manual_seed(0)
    prompts = encode(engine, ["12+34=", "1+2=", "999+1="])
    groups = engine.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=10))
    assert [len(g) for g in groups] == [3, 3, 3]
    for completion in (c for g in groups for c in g):
        assert len(completion.token_ids) == len(completion.logprobs) <= 10
        assert all(lp <= 0 for lp in completion.logprobs)
        stopped_on_eos = completion.token_ids[-1:] == [engine.tokenizer.eos_token_id]
        assert (completion.finish_reason == "stop") == stopped_on_eos
        assert completion.finish_reason == "stop" or len(completion.token_ids) == 10


def padded_logprobs(model, batch, temperature: float) -> torch.Tensor:
    """The learner's recompute: one padded forward over prompt + completion, log_softmax(logits / T) (T=0: 1)."""
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], 1)
    mask = torch.cat([batch.prompt_mask, batch.completion_mask], 1)
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask, position_ids=positions).logits.float()
    logits = logits[:, batch.prompt_ids.shape[1] - 1:-1] / (temperature or 1.0)
    return torch.log_softmax(logits, -1).gather(-1, batch.completion_ids[..., None]).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.8, 0.0])
def test_logprobs_match_learner_forward(engine, temperature):
    """Untruncated sampling (top_k 0, top_p 1): the engine's log-probs are what a padded learner forward gives."""
    prompts = encode(engine, ["4821+3967=", "10+20="])
    params = SamplingParams(n=2, temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=12, seed=1)
    groups = engine.generate(prompts, params)
    batch = build_batch(prompts, groups, ["a", "b"], [{}, {}], engine.tokenizer.pad_token_id)
    logp = padded_logprobs(engine.model, batch, temperature)
    mask = batch.completion_mask.bool()
    assert torch.allclose(logp[mask], batch.sampler_logp[mask], atol=1e-5)


def test_greedy_is_deterministic(engine):
    prompts = encode(engine, ["55+55="])
    a = engine.generate(prompts, SamplingParams(n=2, temperature=0.0, max_new_tokens=8))
    b = engine.generate(prompts, SamplingParams(n=1, temperature=0.0, max_new_tokens=8))
    assert a[0][0].token_ids == a[0][1].token_ids == b[0][0].token_ids


def test_stop_strings_end_the_completion(engine):
    torch.manual_seed(2)
    prompts = encode(engine, ["1+1="] * 4)
    groups = engine.generate(prompts, SamplingParams(n=4, temperature=1.0, max_new_tokens=40, stop=["a", "b"]))
    completions = [c for g in groups for c in g]
    stopped = [c for c in completions if "a" in c.text or "b" in c.text]
    assert stopped, "with 16 samples of 40 random characters a stop string should appear"
    for c in stopped:  # generation ends at the token that completes the first stop string
        assert c.finish_reason == "stop"
        prefix = engine.tokenizer.decode(c.token_ids[:-1], skip_special_tokens=True)
        assert "a" not in prefix and "b" not in prefix


def test_batch_packs_groups_and_micro_batches(engine):
    prompts = encode(engine, ["1+1=", "22+22=", "333+333="])
    groups = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=6))
    batch = build_batch(prompts, groups, ["p0", "p1", "p2"], [{"i": 0}, {"i": 1}, {"i": 2}],
                        engine.tokenizer.pad_token_id)
    assert batch.size == 6 and batch.group_size == 2 and batch.num_groups == 3
    assert [r["i"] for r in batch.rows] == [0, 0, 1, 1, 2, 2]
    assert batch.prompt_mask.sum(1).tolist() == [4, 4, 6, 6, 8, 8]
    batch.keep = torch.tensor([True, True, False, False, True, True])
    micro = batch.micro_batches(2)  # packed after filtering: at most 2 kept rows each, whole groups
    assert [m.size for m in micro] == [2, 2] and [m.rows[0]["i"] for m in micro] == [0, 2]
    assert micro[0].prompt_ids.shape[1] == 4  # trimmed to its own widest prompt
    assert [m.size for m in batch.micro_batches(4)] == [4]  # the dropped group leaves room for the next
