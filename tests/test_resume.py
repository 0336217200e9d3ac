"""Kill a run with SIGKILL at a random step, resume it, and get bit-identical final weights."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
STEPS = 8


def recipe_file(tmp_path: Path, base_recipe: dict, out: Path) -> Path:
    recipe = {**base_recipe, "reward": {"functions": [{"name": "rewards_for_tests:count_sevens"}]},
              "trainer": {**base_recipe["trainer"], "output_dir": str(out), "max_steps": STEPS, "save_steps": 1,
                          "save_total_limit": 3, "lr": 1e-2},
              "eval": {"every_steps": 0}}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def alignrl(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO / "tests")}
    return subprocess.Popen([sys.executable, "-m", "alignrl.cli", "train", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]


def final_weights(run: Path) -> dict:
    return load_file(run / f"checkpoint-{STEPS:06d}" / "model.safetensors")


def test_sigkill_then_resume_is_bit_identical(tmp_path, base_recipe):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    finish(alignrl(str(recipe_file(tmp_path, base_recipe, reference))))

    # Kill once step k is logged (k random, reported on failure). Step k is logged after checkpoint k-1 was written,
    # so k >= 2 leaves a complete checkpoint to resume from; the kill may land mid-save of checkpoint k.
    kill_after = random.Random(os.getpid()).randint(2, STEPS - 2)
    process = alignrl(str(recipe_file(tmp_path, base_recipe, interrupted)))
    metrics = interrupted / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if metrics.is_file() and len(metrics.read_text().splitlines()) >= kill_after:
            break
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / f"checkpoint-{STEPS:06d}").exists()

    finish(alignrl(str(recipe_file(tmp_path, base_recipe, interrupted)), "--resume"))
    expected, got = final_weights(reference), final_weights(interrupted)
    assert expected.keys() == got.keys()
    changed = [k for k in expected if not (expected[k] == got[k]).all()]
    assert not changed, f"killed after step {kill_after}: weights differ in {changed[:3]}"
    initial = load_file(Path(base_recipe["model"]["path"]) / "model.safetensors")
    assert any(not (initial[k] == got[k]).all() for k in initial), "training did not change the weights"
    steps = [line for line in (interrupted / "metrics.jsonl").read_text().splitlines() if line]
    assert len(steps) == STEPS, "metrics.jsonl should hold each step once after the resume"
