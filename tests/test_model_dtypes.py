"""Which dtype each model loads in: float32 master weights for full fine-tuning, bf16 for frozen weights on bf16 GPUs."""

from __future__ import annotations

import pytest
import torch

from alignrl.config.schema import LoraConfig, ModelConfig
from alignrl.learner import models


@pytest.fixture()
def bf16_gpu(monkeypatch):
    """Pretend to be on a GPU with bf16 (only the dtype choice is under test; nothing runs on a GPU)."""
    monkeypatch.setattr(models, "bf16_supported", lambda: True)


def _dtypes(model) -> set[torch.dtype]:
    return {p.dtype for p in model.parameters()}


def test_auto_full_finetuning_keeps_float32_master_weights(tiny_model_dir, bf16_gpu):
    config = ModelConfig(path=str(tiny_model_dir))
    assert _dtypes(models.load_policy(config)) == {torch.float32}
    # the reference is stored like the policy by default, so under the same autocast the KL starts at exactly 0
    assert _dtypes(models.load_reference(config)) == {torch.float32}
    halved = ModelConfig(path=str(tiny_model_dir), reference_dtype="bfloat16")
    assert _dtypes(models.load_reference(halved)) == {torch.bfloat16}  # half the memory, on request


def test_auto_lora_loads_the_frozen_base_in_bf16(tiny_model_dir, bf16_gpu):
    policy = models.load_policy(ModelConfig(path=str(tiny_model_dir), lora=LoraConfig(r=4, alpha=8)))
    frozen = {p.dtype for p in policy.parameters() if not p.requires_grad}
    trainable = {p.dtype for p in policy.parameters() if p.requires_grad}
    assert frozen == {torch.bfloat16} and trainable == {torch.float32}  # peft keeps adapters in float32


def test_explicit_dtype_is_respected(tiny_model_dir, bf16_gpu):
    config = ModelConfig(path=str(tiny_model_dir), dtype="bfloat16")
    assert _dtypes(models.load_policy(config)) == {torch.bfloat16}


def test_cpu_auto_is_float32(tiny_model_dir, monkeypatch):
    monkeypatch.setattr(models, "bf16_supported", lambda: False)
    config = ModelConfig(path=str(tiny_model_dir), lora=LoraConfig(r=4, alpha=8))
    assert _dtypes(models.load_policy(config)) == {torch.float32}
    assert _dtypes(models.load_reference(ModelConfig(path=str(tiny_model_dir)))) == {torch.float32}
