"""`alignrl train` with the vllm engine: the loop pushes weights every step, and the engine's log-probs of the
sampled tokens match the learner's (the step metrics `sampler_logp_diff` / `_max`), with TIS switched on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from alignrl.logging.metrics import read_metrics

pytestmark = pytest.mark.vllm


def test_alignrl_train_with_the_vllm_engine(base_recipe, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump(base_recipe))
    overrides = ["rollout.engine={name: vllm, in_process: true}", "trainer.max_steps=4", "trainer.lr=1e-2",
                 "algorithm.tis_cap=2.0", "eval.every_steps=2", "rollout.n=4",
                 "reward.functions=[{name: 'rewards_for_tests:short_is_good'}]"]
    tests = Path(__file__).resolve().parents[1]  # rewards_for_tests lives there
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tests), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "alignrl.cli", "train", str(recipe), *overrides],
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:  # every step generates with the weights pushed after the previous update
        # float32 on both sides; kernels differ (vLLM fuses q/k/v), so the largest token gap of a batch is ~1e-4
        assert record["sampler_logp_diff_max"] < 5e-4 and record["sampler_logp_diff"] < 1e-5, record
        assert record["time/sync"] > 0
    assert "eval/pass_at_1" in records[1] and "eval/pass_at_1" in records[3]
    assert records[0]["grad_norm"] > 0
