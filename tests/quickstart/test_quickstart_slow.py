"""The whole quickstart, as a user runs it: BC, GRPO, held-out evaluation, report files (minutes on a CPU)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quickstart_end_to_end(tmp_path):
    out = tmp_path / "quickstart"
    result = subprocess.run([sys.executable, "-m", "alignrl.cli", "quickstart", "--out", str(out), "--seed", "0"],
                            cwd=REPO, capture_output=True, text=True, timeout=3000)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads((out / "report.json").read_text())
    assert {"bc_pass_at_1", "rl_pass_at_1", "wall_seconds", "seed"} <= set(report)
    for name in ("report.md", "learning.png", "grpo_curves.png", "grpo/metrics.jsonl", "grpo/run_config.yaml"):
        assert (out / name).is_file(), name
    # RL must really fix the demonstrator's systematic bug (figures per seed are in the closing notes)
    # (the target: +30 points, to >= 90%)
    assert report["rl_pass_at_1"] >= report["bc_pass_at_1"] + 0.3, report
    assert report["rl_pass_at_1"] >= 0.9, report
    # a finished quickstart is never overwritten without --overwrite
    again = subprocess.run([sys.executable, "-m", "alignrl.cli", "quickstart", "--out", str(out)], cwd=REPO,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "--overwrite" in again.stderr
