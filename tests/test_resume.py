"""Kill a run with SIGKILL at a random step, resume it, and get bit-identical final weights and state.

Two runs: plain GRPO, and one with every stateful component of the core contracts: an auxiliary trainable model
with a freeze schedule, a difficulty-adaptive prompt sampler and a reward with running statistics.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[1]
STEPS = 8
VARIANTS = {
    "grpo": {"reward": {"functions": [{"name": "rewards_for_tests:count_sevens"}]}},
    "stateful_components": {
        "reward": {"functions": [{"name": "test_norm_sevens"}]},
        "algorithm": {"name": "test_token_rm", "freeze_steps": 3},
        "data": {"sampler": {"name": "test_hard_first"}},
        # an engine with its own weights: without the push after restoring, the resumed run would sample from the
        # starting weights and end elsewhere
        "rollout": {"engine": {"name": "hf", "share_weights": False}},
    },
    "oreal": {  # the token-level reward model, the pair filter and difficulty-balanced resampling measured online
        "reward": {"functions": [{"name": "test_sevens"}]},
        "algorithm": {"name": "oreal", "actor_freeze_steps": 3, "binarize": True, "token_rm_lr": 1e-3},
        "data": {"sampler": {"name": "pass_rate_buckets", "pass_rate_field": None}},
    },
}


def recipe_file(tmp_path: Path, base_recipe: dict, out: Path, variant: str) -> Path:
    extra = VARIANTS[variant]
    recipe = {**base_recipe, "reward": extra["reward"], "algorithm": extra.get("algorithm", base_recipe["algorithm"]),
              "data": {**base_recipe["data"], **extra.get("data", {})},
              "rollout": {**base_recipe["rollout"], **extra.get("rollout", {})},
              "trainer": {**base_recipe["trainer"], "output_dir": str(out), "max_steps": STEPS, "save_steps": 1,
                          "save_total_limit": 3, "lr": 1e-2},
              "eval": {"every_steps": 0}}
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def alignrl(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "tests" / "core")])}
    return subprocess.Popen([sys.executable, str(REPO / "tests" / "core" / "train_with_doubles.py"), "train", *args],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kwargs)


def finish(process: subprocess.Popen) -> None:
    output, _ = process.communicate(timeout=300)
    assert process.returncode == 0, output[-3000:]


def final_state(run: Path) -> dict:
    checkpoint = run / f"checkpoint-{STEPS:06d}"
    weights = {f"policy/{k}": v for k, v in load_file(checkpoint / "model.safetensors").items()}
    for sub in sorted(p for p in checkpoint.iterdir() if (p / "model.safetensors").is_file()):
        weights.update({f"{sub.name}/{k}": v for k, v in load_file(sub / "model.safetensors").items()})
    state = torch.load(checkpoint / "state_0.pt", weights_only=False)
    return {"weights": weights, "sampler": state["sampler"], "rewards": state["rewards"]}


def _equal(a, b) -> bool:
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, torch.Tensor):  # bit-identical, NaN (e.g. a pass rate never measured) equal to NaN
        return a.shape == b.shape and a.dtype == b.dtype and bool(((a == b) | (a != a) & (b != b)).all())
    return a == b


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_sigkill_then_resume_is_bit_identical(tmp_path, base_recipe, variant):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    finish(alignrl(str(recipe_file(tmp_path, base_recipe, reference, variant))))

    # Kill once step k is logged (k random, reported on failure). Step k is logged after checkpoint k-1 was written,
    # so k >= 2 leaves a complete checkpoint to resume from; the kill may land mid-save of checkpoint k.
    kill_after = random.Random(os.getpid()).randint(2, STEPS - 2)
    process = alignrl(str(recipe_file(tmp_path, base_recipe, interrupted, variant)))
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

    finish(alignrl(str(recipe_file(tmp_path, base_recipe, interrupted, variant)), "--resume"))
    expected, got = final_state(reference), final_state(interrupted)
    assert expected["weights"].keys() == got["weights"].keys()
    changed = [k for k in expected["weights"] if not torch.equal(expected["weights"][k], got["weights"][k])]
    assert not changed, f"killed after step {kill_after}: weights differ in {changed[:3]}"
    assert _equal(expected["sampler"], got["sampler"]), f"killed after step {kill_after}: sampler state differs"
    assert _equal(expected["rewards"], got["rewards"]), f"killed after step {kill_after}: reward state differs"
    initial = load_file(Path(base_recipe["model"]["path"]) / "model.safetensors")
    assert any(not torch.equal(initial[k], got["weights"][f"policy/{k}"]) for k in initial), "nothing trained"
    steps = [line for line in (interrupted / "metrics.jsonl").read_text().splitlines() if line]
    assert len(steps) == STEPS, "metrics.jsonl should hold each step once after the resume"
