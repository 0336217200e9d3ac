"""Server mode: `alignrl serve` (vLLM's OpenAI server with alignrl's worker extension) driven over HTTP --
generation, full and LoRA pushes, and a hung or killed server reported with its URL within the timeout."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from peft import LoraConfig, get_peft_model, get_peft_model_state_dict

from alignrl.quickstart.tiny_model import build_model
from alignrl.rollout import SamplingParams, VLLMEngineSettings, WeightUpdate, build_engine
from alignrl.rollout.vllm_engine import VLLMEngineError

pytestmark = pytest.mark.vllm

PROMPTS = ["12+34=", "1+2=", "999+1=", "5+5="]
TOL = 1e-4
START_TIMEOUT_S = 300.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def server(tokenizer, tmp_path_factory):
    """``alignrl serve`` on a tiny model, in a session of its own (killed as a group at the end)."""
    folder = tmp_path_factory.mktemp("served")
    build_model(tokenizer, preset="test", seed=11).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    port = free_port()
    log = open(folder / "server.log", "w")
    process = subprocess.Popen([sys.executable, "-m", "alignrl.cli", "serve", "--model", str(folder), "--port",
                                str(port), "--enable-lora", "--max-lora-rank", "8", "--", "--max-num-seqs", "32"],
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    yield {"url": f"http://127.0.0.1:{port}", "process": process, "log": folder / "server.log"}
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)
    log.close()


def connect(server, tokenizer, model=None, **settings):
    settings = VLLMEngineSettings(mode="server", server_url=server["url"], **{"timeout_s": START_TIMEOUT_S,
                                                                             **settings})
    try:
        return build_engine("vllm", settings, model=model, tokenizer=tokenizer) if model is not None else \
            build_engine("vllm", settings, model_path="unused", tokenizer=tokenizer)
    except VLLMEngineError:
        print(server["log"].read_text()[-3000:])
        raise


def gap(engine, model, prompts, recompute, temperature=1.0) -> float:
    groups = engine.generate(prompts, SamplingParams(n=2, temperature=temperature, max_new_tokens=10, seed=1))
    return max((torch.tensor(c.logprobs) - recompute(model, p, c.token_ids, temperature)).abs().max().item()
               for p, g in zip(prompts, groups) for c in g)


def test_generate_and_full_pushes_over_http(server, tokenizer, encode, recompute, buckets, trainer, tmp_path):
    policy = build_model(tokenizer, preset="test", seed=0).eval()
    engine = connect(server, tokenizer, model=policy)  # pushes the policy at connection
    prompts = encode(PROMPTS)
    assert gap(engine, policy, prompts, recompute) < TOL
    assert gap(engine, policy, prompts, recompute, temperature=0.0) < TOL
    batch = torch.tensor(encode(["12+34=046\\boxed{46}", "20+31=051\\boxed{51}"]))
    for version in (1, 2):
        trainer(policy, batch, steps=3)
        assert gap(engine, policy, prompts, recompute) > 1e-3
        engine.load_weights(WeightUpdate(version=version, buckets=buckets(policy.state_dict().items(), 16 * 1024)))
        assert engine.weights_version == version and gap(engine, policy, prompts, recompute) < TOL
    via_folder = connect(server, tokenizer, weight_transfer="folder", shared_dir=str(tmp_path))
    other = build_model(tokenizer, preset="test", seed=4).eval()
    via_folder.load_weights(WeightUpdate(version=3, buckets=buckets(other.state_dict().items(), 16 * 1024)))
    assert gap(via_folder, other, prompts, recompute) < TOL and list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="cannot run it"):
        engine.generate(prompts, SamplingParams(logits_processor=lambda i, ids, logits: logits))


def test_lora_pushes_over_http_keep_the_base(server, tokenizer, encode, recompute, buckets):
    base = build_model(tokenizer, preset="test", seed=0)
    engine = connect(server, tokenizer, model=base)
    base_sum = engine.base_checksum()
    policy = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                             task_type="CAUSAL_LM")).eval()
    config = json.loads(json.dumps(policy.peft_config["default"].to_dict(),
                                   default=lambda v: sorted(v) if isinstance(v, set) else str(v)))
    prompts = encode(PROMPTS)
    for version in (1, 2):
        with torch.no_grad():
            for name, p in policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.5)
        engine.load_weights(WeightUpdate(version=version, lora=config,
                                         buckets=buckets(get_peft_model_state_dict(policy).items(), 2048)))
        assert gap(engine, policy, prompts, recompute) < TOL
        assert engine.base_checksum() == base_sum
    with policy.disable_adapter():
        assert gap(engine, policy, prompts, recompute) > 1e-3
    engine.close()  # unloads the adapter: the base is served again
    with policy.disable_adapter():
        assert gap(connect(server, tokenizer), policy, prompts, recompute) < TOL


def test_a_hung_server_times_out_with_its_url(server, tokenizer, encode):
    engine = connect(server, tokenizer, timeout_s=3.0)
    os.killpg(server["process"].pid, signal.SIGSTOP)
    try:
        start = time.monotonic()
        with pytest.raises(VLLMEngineError, match=f"vLLM server {server['url']}: generate failed"):
            engine.generate(encode(PROMPTS), SamplingParams(max_new_tokens=4))
        assert time.monotonic() - start < 3.0 + 5
    finally:
        os.killpg(server["process"].pid, signal.SIGCONT)


def test_a_killed_server_is_a_clear_error(server, tokenizer, encode):
    engine = connect(server, tokenizer, timeout_s=5.0)
    os.killpg(server["process"].pid, signal.SIGKILL)
    server["process"].wait(timeout=30)
    start = time.monotonic()
    with pytest.raises(VLLMEngineError, match=f"vLLM server {server['url']}: generate failed.*alignrl serve"):
        engine.generate(encode(PROMPTS), SamplingParams(max_new_tokens=4))
    with pytest.raises(VLLMEngineError, match="weight push|collective_rpc"):
        engine.load_weights(WeightUpdate(version=1, buckets=[[("model.norm.weight", torch.ones(64))]]))
    assert time.monotonic() - start < 5.0 + 5
