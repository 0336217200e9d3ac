"""Fixtures of the DeepSpeed tests: DeepSpeed itself (its CPU communication op built once, before any launch) and
a recipe whose runs can be compared across process counts and across a resume."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ds_launch import launch_env  # tests/distributed is on pytest's pythonpath, after tests/ (its conftest wins)


@pytest.fixture(scope="session")
def deepspeed_ready() -> None:
    """Skip (with the reason) where DeepSpeed is not installed; fail instead when ALIGNRL_REQUIRE_DEEPSPEED=1 (CI).
    Builds DeepSpeed's CPU shared-memory op once (JIT, minutes on 2 cores; cached in ~/.cache/torch_extensions),
    so no two-rank launch compiles it under its own timeout."""
    try:
        import deepspeed  # noqa: F401  (installed?)
    except ImportError as err:
        message = f"DeepSpeed is not installed ({err}); `bash scripts/install.sh` installs it with the dev extra"
        if os.environ.get("ALIGNRL_REQUIRE_DEEPSPEED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", "from deepspeed.comm.torch import build_shm_op; build_shm_op()"],
                            env=launch_env(), capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        pytest.fail(f"building DeepSpeed's CPU communication op failed (a stale 'lock' file in "
                    f"~/.cache/torch_extensions/*/deepspeed_shm_comm/ from a killed build blocks it):\n"
                    f"{result.stderr[-3000:]}")
    print(f"DeepSpeed CPU op ready in {time.perf_counter() - started:.0f} s")


@pytest.fixture(scope="session")
def ds_recipe(tiny_model_dir, prompt_files) -> dict:
    """GRPO with the exact KL to a frozen reference (its logits in every micro-batch) that trains only on
    even-numbered prompts: with prompts in file order, rank 0 gets the even ones (two micro-batches, so gradient
    accumulation and the engine's step boundary are exercised) and rank 1 none (it runs zero-weight passes, which
    must still join every collective, the sharded reference's included). 2 passes per batch. The step-seeded
    engine and the parity reward give one- and two-process runs (and resumed ones) the same completions. The held-out
    evaluation after the last step has 3 prompts, so two ranks get unequal shares (which must not deadlock the
    sharded policy's generation)."""
    return {
        "model": {"path": str(tiny_model_dir)},
        "data": {"train": str(prompt_files["train"]), "eval": str(prompt_files["eval"]), "shuffle": False},
        "rollout": {"prompts_per_step": 8, "n": 4, "max_new_tokens": 12, "temperature": 1.0,
                    "engine": {"name": "test_step_seeded"}},
        "algorithm": {"name": "test_even_prompts", "kl_coef": 0.1, "kl_estimator": "exact"},
        "reward": {"functions": [{"name": "test_parity"}]},
        "trainer": {"max_steps": 4, "save_steps": 2, "lr": 1e-3, "micro_batch_size": 4, "epochs_per_batch": 2,
                    "seed": 0},
        "eval": {"every_steps": 4, "max_prompts": 3, "n": 2},  # 3 prompts: 2 on rank 0, 1 on rank 1
        "logging": {"progress_bar": False},
    }
