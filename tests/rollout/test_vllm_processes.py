"""The colocated vllm engine with vLLM's own processes: pushes as safetensors bytes, calls under a timeout, and a
killed engine process reported clearly instead of a hang."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch

from alignrl.quickstart.tiny_model import build_model
from alignrl.rollout import SamplingParams, VLLMEngineSettings, WeightUpdate, build_engine
from alignrl.rollout.vllm_engine import VLLMEngineError

pytestmark = pytest.mark.vllm

PROMPTS = ["12+34=", "1+2=", "999+1="]
TIMEOUT_S = 60.0


@pytest.fixture(scope="module")
def engine(tokenizer):
    policy = build_model(tokenizer, preset="test", seed=0)
    built = build_engine("vllm", VLLMEngineSettings(in_process=False, timeout_s=TIMEOUT_S), model=policy,
                         tokenizer=tokenizer)
    yield built
    pids = built.engine_pids() if built.llm is not None and not built._unusable else []
    built.close()
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def gap(engine, model, prompts, recompute) -> float:
    groups = engine.generate(prompts, SamplingParams(n=2, temperature=1.0, max_new_tokens=10, seed=1))
    return max((torch.tensor(c.logprobs) - recompute(model, p, c.token_ids, 1.0)).abs().max().item()
               for p, g in zip(prompts, groups) for c in g)


def test_byte_pushes_reach_the_worker_processes(engine, tokenizer, encode, recompute, buckets):
    assert engine.engine_pids() and os.getpid() not in engine.engine_pids()
    prompts = encode(PROMPTS)
    for version, seed in enumerate((5, 6), start=1):
        model = build_model(tokenizer, preset="test", seed=seed).eval()
        assert gap(engine, model, prompts, recompute) > 1e-3
        engine.load_weights(WeightUpdate(version=version, buckets=buckets(model.state_dict().items(), 16 * 1024)))
        assert gap(engine, model, prompts, recompute) < 1e-4
    with pytest.raises(KeyError, match="not.a.weight"):
        engine.load_weights(WeightUpdate(version=3, buckets=[[("not.a.weight", torch.ones(2))]]))
    assert gap(engine, model, prompts, recompute) < 1e-4  # a refused push changed nothing
    with pytest.raises(ValueError, match="in_process: true"):
        engine.generate(prompts, SamplingParams(logits_processor=lambda i, ids, logits: logits))


def test_a_killed_engine_process_is_a_clear_error_within_the_timeout(engine, encode):
    for pid in engine.engine_pids():
        os.kill(pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(VLLMEngineError, match="vLLM engine serving .*: generate failed"):
        for _ in range(3):  # the engine may need a moment to notice
            engine.generate(encode(PROMPTS), SamplingParams(max_new_tokens=4))
            time.sleep(1)
    assert time.monotonic() - start < TIMEOUT_S + 5
    with pytest.raises(VLLMEngineError):
        engine.generate(encode(PROMPTS), SamplingParams(max_new_tokens=4))
