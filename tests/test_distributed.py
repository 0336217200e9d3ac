"""``accelerate launch`` with 2 CPU processes: ranks see different prompts and end with identical parameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_two_processes_stay_in_sync(tmp_path, base_recipe):
    record = tmp_path / "record"
    recipe = {**base_recipe, "reward": {"functions": [{"name": "rewards_for_tests:record_prompts"}]},
              "trainer": {**base_recipe["trainer"], "max_steps": 3, "lr": 1e-2, "save_steps": 0},
              "rollout": {**base_recipe["rollout"], "prompts_per_step": 4}, "eval": {"every_steps": 0}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(REPO / "tests"),
           "ALIGNRL_TEST_RECORD": str(record), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "29517", str(REPO / "tests" / "distributed_worker.py"), str(path)]
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]

    params = [json.loads(Path(f"{record}.params{rank}").read_text()) for rank in (0, 1)]
    assert params[0]["world"] == 2
    assert params[0]["sha256"] == params[1]["sha256"], "ranks ended with different parameters"
    assert params[0]["reward_mean"] == params[1]["reward_mean"], "metrics were not reduced across ranks"

    seen = [Path(f"{record}.rank{rank}").read_text().splitlines() for rank in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 3 * 2 * 4  # steps x prompts per rank x samples per prompt
    assert not set(seen[0]) & set(seen[1]), "both ranks trained on the same prompts"
    checkpoint = tmp_path / "run" / "checkpoint-000003"
    assert (checkpoint / "state_0.pt").is_file() and (checkpoint / "state_1.pt").is_file()
