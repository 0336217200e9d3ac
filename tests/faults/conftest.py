"""Fixtures for the fault tests: a quick recipe writing into the test's temporary folder."""

from __future__ import annotations

import pytest


@pytest.fixture()
def small_recipe(tiny_model_dir, prompt_files, tmp_path):
    """``small_recipe(**trainer)``: a quick recipe dict writing to ``tmp_path/run`` (no eval, no progress bar)."""

    def make(**trainer) -> dict:
        return {"model": {"path": str(tiny_model_dir)}, "data": {"train": str(prompt_files["train"])},
                "rollout": {"prompts_per_step": 2, "n": 2, "max_new_tokens": 6},
                "reward": {"functions": [{"name": "test_length"}]},
                "trainer": {"output_dir": str(tmp_path / "run"), "max_steps": 3, "save_steps": 1,
                            "save_total_limit": 5, "seed": 0, **trainer},
                "eval": {"every_steps": 0}, "logging": {"progress_bar": False}}

    return make
