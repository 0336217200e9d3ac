"""The engine registry: typed settings per engine, and build_engine's in-memory / from-folder routes."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from alignrl.rollout import (HFEngineSettings, RolloutEngine, SamplingParams, WeightUpdate, base, build_engine,
                             engine_settings_class, register_engine, registered_engines)
from alignrl.rollout.hf_engine import HFEngine


@dataclass
class EchoSettings:
    suffix: int = 7  # token appended to every prompt


class EchoEngine(RolloutEngine):
    def __init__(self, settings: EchoSettings, **built_with):
        self.settings, self.built_with = settings, built_with

    def generate(self, prompts, params):
        return [[base.Completion(p + [self.settings.suffix], [0.0] * (len(p) + 1), "", "stop")] * params.n
                for p in prompts]


@pytest.fixture()
def echo_engine():
    register_engine("echo-test", EchoSettings)(lambda settings, **kw: EchoEngine(settings, **kw))
    yield
    del base._ENGINES["echo-test"]


def test_custom_engine_registers_with_its_settings(echo_engine):
    assert "echo-test" in registered_engines() and "hf" in registered_engines()
    assert engine_settings_class("echo-test") is EchoSettings and engine_settings_class("hf") is HFEngineSettings
    engine = build_engine("echo-test", model_path="somewhere", dtype="bfloat16", device="cpu")
    assert engine.settings == EchoSettings() and engine.built_with == {
        "model": None, "model_path": "somewhere", "tokenizer": None, "dtype": torch.bfloat16, "device": "cpu"}
    assert build_engine("echo-test", EchoSettings(suffix=3), model_path="x").generate(
        [[1]], SamplingParams())[0][0].token_ids == [1, 3]
    assert build_engine("echo-test", {"suffix": 4}, model_path="x").settings.suffix == 4
    with pytest.raises(TypeError, match="unknown settings.*'nope'"):
        build_engine("echo-test", {"nope": 1}, model_path="x")
    with pytest.raises(TypeError, match="EchoSettings"):
        build_engine("echo-test", HFEngineSettings(), model_path="x")


def test_unknown_engine_and_bad_registration():
    with pytest.raises(KeyError, match="registered: .*hf"):
        engine_settings_class("nope")
    with pytest.raises(KeyError, match="unknown rollout engine 'nope'"):
        build_engine("nope", model_path="x")
    with pytest.raises(TypeError, match="dataclass"):
        register_engine("bad", dict)


def test_exactly_one_model_source(tokenizer, make_model, tiny_model_dir):
    with pytest.raises(ValueError, match="exactly one"):
        build_engine("hf", tokenizer=tokenizer)
    with pytest.raises(ValueError, match="exactly one"):
        build_engine("hf", model=make_model(), model_path=str(tiny_model_dir), tokenizer=tokenizer)
    with pytest.raises(ValueError, match="tokenizer"):
        build_engine("hf", model=make_model())


def test_hf_defaults_share_the_learner_module(tokenizer, make_model):
    model = make_model()
    engine = build_engine("hf", None, model=model, tokenizer=tokenizer)
    assert isinstance(engine, HFEngine) and engine.settings == HFEngineSettings()
    assert engine.model is model and engine.shares_learner_weights and engine.weights_version == -1
    with pytest.raises(ValueError, match="share_weights=True"):
        build_engine("hf", model=model, tokenizer=tokenizer, dtype="bfloat16")


def test_hf_copy_converts_dtype_and_owns_its_weights(tokenizer, make_model):
    model = make_model()
    engine = build_engine("hf", HFEngineSettings(share_weights=False), model=model, tokenizer=tokenizer,
                          dtype="bfloat16")
    assert not engine.shares_learner_weights
    assert {p.dtype for p in engine.model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    assert not any(p.requires_grad for p in engine.model.parameters())
    with torch.no_grad():
        next(model.parameters()).add_(1.0)  # the learner's update does not reach the copy until pushed
    assert not torch.equal(next(model.parameters()).bfloat16(), next(engine.model.parameters()))


def test_hf_from_folder(tiny_model_dir, encode):
    engine = build_engine("hf", HFEngineSettings(generation_batch_size=1), model_path=str(tiny_model_dir),
                          dtype="float32")
    assert not engine.shares_learner_weights and engine.generation_batch_size == 1
    groups = engine.generate(encode(["1+1=", "2+2="]), SamplingParams(n=2, max_new_tokens=4, seed=0))
    assert [len(g) for g in groups] == [2, 2]
    engine.load_weights(WeightUpdate(version=0, buckets=[]))
    assert engine.weights_version == 0


def test_math500_make_engine_uses_the_registry(tiny_model_dir, echo_engine):
    from alignrl.evaluation.math500 import EvalError, Math500Config, make_engine

    engine = make_engine("hf", str(tiny_model_dir), "float32", "cpu")
    assert isinstance(engine, HFEngine) and next(engine.model.parameters()).dtype == torch.float32
    assert isinstance(make_engine("echo-test", str(tiny_model_dir)), EchoEngine)
    with pytest.raises(EvalError, match=r"available: .*echo-test, .*hf"):
        make_engine("nope", str(tiny_model_dir))
    with pytest.raises(EvalError, match="unknown --engine 'nope'"):
        Math500Config(model="m", out="o", engine="nope").validate()
