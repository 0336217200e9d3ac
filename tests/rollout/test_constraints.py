"""Constrained decoding in the HF engine: allowed token ids per prompt and a per-row logits processor."""

from __future__ import annotations

import pytest
import torch

from alignrl.rollout import HFEngineSettings, SamplingParams, build_engine

PROMPTS = ["12+34=", "1+2=", "999+1="]


def make_engine(tokenizer, model, generation_batch_size=None):
    return build_engine("hf", HFEngineSettings(generation_batch_size=generation_batch_size), model=model,
                        tokenizer=tokenizer)


def constrained_logprobs(logits: torch.Tensor, tokens: list[int], allowed: list[int],
                         temperature: float) -> torch.Tensor:
    """log_softmax over only the allowed logits (tempered), of the sampled tokens."""
    masked = torch.full_like(logits, float("-inf"))
    masked[:, allowed] = logits[:, allowed]
    masked = masked / temperature if temperature > 0 else masked
    return torch.log_softmax(masked, -1).gather(-1, torch.tensor(tokens)[:, None]).squeeze(-1)


@pytest.mark.parametrize("temperature", [1.0, 0.7, 0.0])
def test_allowed_ids_bound_samples_and_logprobs(tokenizer, make_model, encode, completion_logits, temperature):
    engine = make_engine(tokenizer, make_model())
    allowed = [tokenizer.convert_tokens_to_ids("a"), tokenizer.convert_tokens_to_ids("b"), tokenizer.eos_token_id]
    prompts = encode(PROMPTS)
    groups = engine.generate(prompts, SamplingParams(n=4, temperature=temperature, max_new_tokens=16, seed=0,
                                                     allowed_token_ids=[allowed] * len(prompts)))
    tokens = [t for g in groups for c in g for t in c.token_ids]
    assert set(tokens) <= set(allowed) and len(set(tokens)) >= (1 if temperature == 0 else 3)
    for prompt, group in zip(prompts, groups):
        for c in group:
            assert set(c.text) <= {"a", "b"}
            logits = completion_logits(engine.model, prompt, c.token_ids)
            expected = constrained_logprobs(logits, c.token_ids, allowed, temperature)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-5)
            if temperature == 0:  # greedy picks the best allowed token
                best = [allowed[i] for i in logits[:, allowed].argmax(-1).tolist()]
                assert best == c.token_ids


def test_allowed_ids_follow_each_prompt_through_chunks_and_n(tokenizer, make_model, encode):
    """3 prompts x 2 samples in generate calls of 2 prompts each: every row keeps its own prompt's id set."""
    engine = make_engine(tokenizer, make_model(), generation_batch_size=2)
    sets = [[tokenizer.convert_tokens_to_ids(ch) for ch in chars] for chars in ("xy", "pq", "mn")]
    groups = engine.generate(encode(PROMPTS), SamplingParams(n=2, temperature=1.0, max_new_tokens=12, seed=1,
                                                             allowed_token_ids=sets))
    assert [len(g) for g in groups] == [2, 2, 2]
    for ids, group in zip(sets, groups):
        for c in group:  # no EOS allowed: every completion runs to max_new_tokens
            assert len(c.token_ids) == 12 and c.finish_reason == "length" and set(c.token_ids) <= set(ids)


def test_logits_processor_bans_repeats(tokenizer, make_model, encode, completion_logits):
    engine = make_engine(tokenizer, make_model(), generation_batch_size=1)
    calls: list[tuple[int, tuple[int, ...]]] = []

    def no_repeats(prompt_index: int, generated: list[int], logits: torch.Tensor) -> torch.Tensor:
        calls.append((prompt_index, tuple(generated)))
        banned = logits.clone()
        banned[generated] = float("-inf")
        return banned

    prompts = encode(PROMPTS)
    groups = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=30, seed=0,
                                                     logits_processor=no_repeats))
    for index, (prompt, group) in enumerate(zip(prompts, groups)):
        for c in group:
            assert len(c.token_ids) == len(set(c.token_ids))
            for step in range(len(c.token_ids)):  # called with this row's prompt and its own prefix
                assert (index, tuple(c.token_ids[:step])) in calls
            logits = completion_logits(engine.model, prompt, c.token_ids)
            for step, token in enumerate(c.token_ids):
                logits[step, c.token_ids[:step]] = float("-inf")
            expected = torch.log_softmax(logits, -1).gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-5)
    assert {i for i, _ in calls} == {0, 1, 2}


def test_bad_constraints_are_refused(tokenizer, make_model, encode):
    engine = make_engine(tokenizer, make_model())
    prompts = encode(PROMPTS)
    with pytest.raises(ValueError, match="one list per prompt"):
        engine.generate(prompts, SamplingParams(max_new_tokens=2, allowed_token_ids=[[2]]))
    with pytest.raises(ValueError, match="outside the vocabulary"):
        engine.generate(prompts, SamplingParams(max_new_tokens=2, allowed_token_ids=[[2], [2], [10**6]]))
    with pytest.raises(ValueError, match="shape"):
        engine.generate(prompts, SamplingParams(max_new_tokens=2, logits_processor=lambda i, g, x: x[:3]))
