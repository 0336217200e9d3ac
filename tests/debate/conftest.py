"""Fixtures for the debate tests: tiny judge and debater folders built in code (no hub), a few problems."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from alignrl.debate.domain import make_problems
from alignrl.quickstart.tiny_model import PRESETS, build_model, build_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="session")
def problems():
    return make_problems(40, seed=0)


@pytest.fixture(scope="session")
def judge_dir(tmp_path_factory, tokenizer) -> Path:
    """An untrained one-output judge (a wide score head, so scores differ by whole units) with the tokenizer."""
    folder = tmp_path_factory.mktemp("tiny-judge")
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         **{**PRESETS["test"], "num_labels": 1})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlamaForSequenceClassification(config)
        torch.nn.init.normal_(model.score.weight, std=2.0)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def debater_dir(tmp_path_factory, tokenizer) -> Path:
    """An untrained tiny causal LM (the "test" preset) to serve as an LM debater or a baseline policy."""
    folder = tmp_path_factory.mktemp("tiny-debater")
    build_model(tokenizer, "test", seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def judge(judge_dir):
    from alignrl.debate.judge import Judge

    return Judge.load(judge_dir, device="cpu")


class FakeJudge:
    """J(e, a) = sum over revealed units u of weight(u, a): a judge whose preferences a test can set exactly."""

    def __init__(self, weight):
        self.weight, self.calls = weight, 0

    def score(self, units, revealed, answers):
        self.calls += len(answers)
        return torch.tensor([float(sum(self.weight(u[i], a) for i in r)) for u, r, a in zip(units, revealed, answers)])


@pytest.fixture
def fake_judge():
    return FakeJudge
