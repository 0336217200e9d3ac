"""The HF engine samples from exactly the distribution it is asked for, and reports log-probs under it.

No hidden top-k, nothing from the checkpoint's generation_config.json, the recorder after every truncation, and
per-call seeds that leave the global RNG alone.
"""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig
from transformers.generation.logits_process import (RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper,
                                                    TopKLogitsWarper, TopPLogitsWarper)

from alignrl.rollout import HFEngineSettings, SamplingParams, build_engine
from alignrl.rollout.hf_sampling import Constrain, RecordLogprobs

PROMPTS = ["12+34=", "1+2=", "999+1=", "5+5="]


@pytest.fixture()
def engine(tokenizer, make_model):
    return build_engine("hf", model=make_model(), tokenizer=tokenizer)


@pytest.fixture()
def leaky_model_dir(tmp_path, tokenizer, make_model):
    """A saved model whose generation_config.json would change the sampled distribution if it leaked in."""
    model = make_model()
    model.generation_config = GenerationConfig(do_sample=True, repetition_penalty=1.3, top_k=7, temperature=0.3,
                                               eos_token_id=tokenizer.eos_token_id,
                                               pad_token_id=tokenizer.pad_token_id)
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    return tmp_path


def capture_processors(engine, monkeypatch) -> list[list]:
    """Every LogitsProcessorList ``generate`` builds (and so runs) from now on, one list per call."""
    module = engine.model
    original = module._get_logits_processor
    seen: list[list] = []

    def wrapper(*args, **kwargs):
        processors = original(*args, **kwargs)
        seen.append(list(processors))
        return processors

    monkeypatch.setattr(module, "_get_logits_processor", wrapper)
    return seen


def run_types(engine, monkeypatch, encode, params: SamplingParams) -> list:
    seen = capture_processors(engine, monkeypatch)
    engine.generate(encode(PROMPTS[:2]), params)
    assert len(seen) == 1
    return seen[0]


def test_neutral_sampling_runs_only_the_recorder(engine, monkeypatch, encode):
    processors = run_types(engine, monkeypatch, encode, SamplingParams(temperature=1.0, top_k=0, top_p=1.0,
                                                                       max_new_tokens=4))
    assert [type(p) for p in processors] == [RecordLogprobs]


def test_greedy_runs_only_the_recorder(engine, monkeypatch, encode):
    processors = run_types(engine, monkeypatch, encode, SamplingParams(temperature=0.0, top_k=5, max_new_tokens=4))
    assert [type(p) for p in processors] == [RecordLogprobs]


def test_truncation_runs_in_order_with_recorder_last(engine, monkeypatch, encode):
    processors = run_types(engine, monkeypatch, encode, SamplingParams(temperature=0.7, top_k=5, top_p=0.9,
                                                                       max_new_tokens=4))
    assert [type(p) for p in processors] == [TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
                                             RecordLogprobs]
    temperature, top_k, top_p, _ = processors
    assert temperature.temperature == 0.7 and top_k.top_k == 5 and top_p.top_p == 0.9


def test_constraints_run_first(engine, monkeypatch, encode):
    params = SamplingParams(temperature=0.5, max_new_tokens=4, allowed_token_ids=[[2, 5], [2, 6]])
    assert [type(p) for p in run_types(engine, monkeypatch, encode, params)] == [
        Constrain, TemperatureLogitsWarper, RecordLogprobs]


@pytest.mark.parametrize("params", [SamplingParams(max_new_tokens=4), SamplingParams(temperature=0.0,
                                                                                      max_new_tokens=4),
                                    SamplingParams(temperature=0.7, top_k=5, top_p=0.9, max_new_tokens=4)])
def test_checkpoint_generation_config_does_not_leak(leaky_model_dir, monkeypatch, encode, params):
    engine = build_engine("hf", model_path=str(leaky_model_dir))
    saved = engine.model.generation_config
    processors = run_types(engine, monkeypatch, encode, params)
    assert not any(isinstance(p, RepetitionPenaltyLogitsProcessor) for p in processors)
    assert not any(isinstance(p, TopKLogitsWarper) and p.top_k == 7 for p in processors)
    assert not any(isinstance(p, TemperatureLogitsWarper) and p.temperature == 0.3 for p in processors)
    assert isinstance(processors[-1], RecordLogprobs)
    assert engine.model.generation_config is saved and saved.top_k == 7  # restored untouched


def test_model_generation_config_opt_in_applies_processors_not_sampling(leaky_model_dir, monkeypatch, encode):
    engine = build_engine("hf", HFEngineSettings(use_model_generation_config=True), model_path=str(leaky_model_dir))
    processors = run_types(engine, monkeypatch, encode, SamplingParams(max_new_tokens=4))
    assert [type(p) for p in processors] == [RepetitionPenaltyLogitsProcessor, RecordLogprobs]
    assert processors[0].penalty == 1.3


def ranks(engine, prompt, completion, completion_logits, temperature=1.0) -> torch.Tensor:
    """Rank of each sampled token among the (tempered) logits: 0 = most likely."""
    logits = completion_logits(engine.model, prompt, completion) / temperature
    chosen = logits.gather(-1, torch.tensor(completion)[:, None])
    return (logits > chosen).sum(-1)


@pytest.mark.parametrize("from_leaky_checkpoint", [False, True])
def test_top_k_zero_is_off(tokenizer, make_model, leaky_model_dir, encode, completion_logits, recompute,
                           from_leaky_checkpoint):
    """The tiny model is near uniform over ~100 tokens: 512 samples drawn without truncation land outside the
    top 50 (transformers' hidden default) and outside the top 7 (the checkpoint's) many times."""
    engine = build_engine("hf", model_path=str(leaky_model_dir)) if from_leaky_checkpoint else \
        build_engine("hf", model=make_model(), tokenizer=tokenizer)
    prompts = encode(PROMPTS)
    groups = engine.generate(prompts, SamplingParams(n=16, temperature=1.0, top_k=0, max_new_tokens=8, seed=0))
    all_ranks = torch.cat([ranks(engine, p, c.token_ids, completion_logits) for p, g in zip(prompts, groups)
                           for c in g])
    assert (all_ranks >= 50).sum() > 20
    for prompt, group in zip(prompts, groups):
        for c in group:  # nor does a repetition penalty change the recorded distribution
            assert torch.allclose(torch.tensor(c.logprobs), recompute(engine.model, prompt, c.token_ids, 1.0),
                                  atol=1e-5)


def test_untruncated_logprobs_equal_tempered_recompute(engine, encode, recompute):
    prompts = encode(PROMPTS)
    groups = engine.generate(prompts, SamplingParams(n=4, temperature=0.8, top_k=0, top_p=1.0, max_new_tokens=12,
                                                     seed=0))
    for prompt, group in zip(prompts, groups):
        for c in group:
            assert len(c.logprobs) == len(c.token_ids) > 0
            assert torch.allclose(torch.tensor(c.logprobs), recompute(engine.model, prompt, c.token_ids, 0.8),
                                  atol=1e-5)


def test_greedy_logprobs_are_untempered(engine, encode, recompute, completion_logits):
    prompts = encode(PROMPTS)
    for prompt, (c,) in zip(prompts, engine.generate(prompts, SamplingParams(temperature=0.0, max_new_tokens=8))):
        assert completion_logits(engine.model, prompt, c.token_ids).argmax(-1).tolist() == c.token_ids
        assert torch.allclose(torch.tensor(c.logprobs), recompute(engine.model, prompt, c.token_ids, 0.0), atol=1e-5)


def test_top_k_logprobs_are_renormalised_over_the_top_k(engine, encode, completion_logits):
    prompts = encode(PROMPTS)
    groups = engine.generate(prompts, SamplingParams(n=4, temperature=0.8, top_k=3, max_new_tokens=12, seed=0))
    for prompt, group in zip(prompts, groups):
        for c in group:
            logits = completion_logits(engine.model, prompt, c.token_ids) / 0.8
            assert (ranks(engine, prompt, c.token_ids, completion_logits, 0.8) < 3).all()
            chosen = logits.gather(-1, torch.tensor(c.token_ids)[:, None]).squeeze(-1)
            expected = chosen - torch.logsumexp(logits.topk(3, dim=-1).values, dim=-1)
            assert torch.allclose(torch.tensor(c.logprobs), expected, atol=1e-5)


def test_top_p_logprobs_are_renormalised_over_the_nucleus(engine, encode, recompute):
    prompts = encode(PROMPTS)
    groups = engine.generate(prompts, SamplingParams(n=4, temperature=1.0, top_p=0.5, max_new_tokens=12, seed=0))
    for prompt, group in zip(prompts, groups):
        for c in group:  # dropping half the mass raises every sampled token's log-prob by about log 2
            gain = torch.tensor(c.logprobs) - recompute(engine.model, prompt, c.token_ids, 1.0)
            assert (gain > 0.5).all() and (gain <= torch.log(torch.tensor(2.0)) + 0.1).all()


def test_seed_fixes_the_samples_and_leaves_the_global_rng_alone(engine, encode):
    prompts = encode(PROMPTS)
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=10, seed=123)
    torch.manual_seed(0)
    state = torch.get_rng_state()
    first = engine.generate(prompts, params)
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(99)  # a different global RNG state: same completions
    second = engine.generate(prompts, params)
    assert [[c.token_ids for c in g] for g in first] == [[c.token_ids for c in g] for g in second]
    other = engine.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=10, seed=124))
    assert [[c.token_ids for c in g] for g in first] != [[c.token_ids for c in g] for g in other]
    state = torch.get_rng_state()
    engine.generate(prompts, SamplingParams(n=3, temperature=1.0, max_new_tokens=10))  # seed None: global RNG
    assert not torch.equal(torch.get_rng_state(), state)


def test_generation_config_and_mode_restored_after_an_error(engine, encode):
    saved = engine.model.generation_config
    engine.model.train()

    def explode(prompt_index, generated, logits):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        engine.generate(encode(PROMPTS[:1]), SamplingParams(max_new_tokens=3, logits_processor=explode))
    assert engine.model.generation_config is saved and engine.model.training


@pytest.mark.parametrize("bad", [SamplingParams(top_p=0.0), SamplingParams(top_k=-1), SamplingParams(n=0),
                                 SamplingParams(temperature=-1.0), SamplingParams(max_new_tokens=0)])
def test_bad_sampling_params_are_refused(engine, encode, bad):
    with pytest.raises(ValueError, match="SamplingParams"):
        engine.generate(encode(PROMPTS[:1]), bad)
