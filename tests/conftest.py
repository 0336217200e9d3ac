"""Shared fixtures: a tiny model folder and prompt files built in code (no hub, no network)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrl.quickstart.task import make_prompts
from alignrl.quickstart.tiny_model import build_model, build_tokenizer
import rewards_for_tests  # noqa: F401  (registers the test rewards)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-model")
    tokenizer = build_tokenizer()
    build_model(tokenizer, preset="test", seed=0).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def long_context_model_dir(tmp_path_factory) -> Path:
    """The tiny test model with a 1,024-token context: MATH-500 prompts fit (``tiny_model_dir``'s 128 do not)."""
    folder = tmp_path_factory.mktemp("tiny-1024")
    tokenizer = build_tokenizer()
    build_model(tokenizer, preset="test", seed=0, max_position_embeddings=1024).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def prompt_files(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("prompts")
    return {"train": write_jsonl(folder / "train.jsonl", make_prompts(64, seed=0, split="train")),
            "eval": write_jsonl(folder / "eval.jsonl", make_prompts(16, seed=0, split="heldout"))}


@pytest.fixture(scope="session")
def math500_file() -> Path:
    """MATH-500 as a JSONL file (shared/ beside the checkout, or a copy fetched from the hub); skips with the
    reason when neither is available."""
    from math500_data import find_math500

    path, reason = find_math500()
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture()
def base_recipe(tiny_model_dir, prompt_files, tmp_path) -> dict:
    """A complete, fast recipe as a dict (tests override what they exercise)."""
    return {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train": str(prompt_files["train"]), "eval": str(prompt_files["eval"])},
        "rollout": {"prompts_per_step": 4, "n": 4, "max_new_tokens": 12, "temperature": 1.0},
        "algorithm": {"name": "grpo"},
        "reward": {"functions": [{"name": "test_length"}]},
        "trainer": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "lr": 1e-3, "micro_batch_size": 8,
                    "save_steps": 2, "seed": 0},
        "eval": {"every_steps": 2, "max_prompts": 8},
        "logging": {"progress_bar": False},
    }
