"""Fixtures for the reward-model tests: a tiny sequence-classification reward model built in code (no hub)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForSequenceClassification

from alignrl.quickstart.tiny_model import PRESETS, build_tokenizer


def build_reward_model(tokenizer, seed: int = 0, head_std: float = 2.0, **overrides) -> LlamaForSequenceClassification:
    """A one-output ``LlamaForSequenceClassification`` of the "test" preset; the score head is drawn with a large
    standard deviation so that scores (and margins) spread over several units, not a few hundredths."""
    config = LlamaConfig(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                         **{**PRESETS["test"], "num_labels": 1, **overrides})
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForSequenceClassification(config)
        torch.nn.init.normal_(model.score.weight, std=head_std)
    return model


@pytest.fixture(scope="session")
def make_reward_model():
    """The builder above, for tests that need a model with other settings."""
    return build_reward_model


@pytest.fixture(scope="session")
def reward_model_dir(tmp_path_factory) -> Path:
    """A saved tiny reward model with the character-level tokenizer (chat template: the contents concatenated)."""
    folder = tmp_path_factory.mktemp("tiny-rm")
    tokenizer = build_tokenizer()
    build_reward_model(tokenizer).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
