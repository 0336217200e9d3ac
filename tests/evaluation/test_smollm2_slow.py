"""Opt-in (``pytest -m slow``): MATH-500 on the real SmolLM2-135M-Instruct, greedy, first 20 problems."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from alignrl.evaluation import cli

MATH500 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "math500" / "test.jsonl"


@pytest.mark.slow
@pytest.mark.skipif(not MATH500.is_file(), reason=f"{MATH500} not found (shared/ beside the repo)")
def test_smollm2_math500(smollm2_dir, tmp_path):
    out = tmp_path / "smollm2-math500"
    start = time.perf_counter()
    assert cli.main(["--model", str(smollm2_dir), "--out", str(out), "--data", str(MATH500), "--limit", "20",
                     "--max-tokens", "512", "--temperature", "0", "--batch-size", "20", "--dtype", "float32"]) == 0
    wall = time.perf_counter() - start
    results = json.loads((out / "results.json").read_text())
    overall = results["overall"]
    print(f"\nSmolLM2-135M-Instruct MATH-500 first 20, greedy, max_tokens 512: pass@1 {overall['pass@1']:.3f}, "
          f"no answer {overall['no_answer_share']:.2f}, truncated {overall['truncated_share']:.2f}, "
          f"mean tokens {overall['mean_response_tokens']:.0f}, wall {wall:.0f} s")
    print((out / "report.md").read_text())
    assert overall["problems"] == 20 and 0.0 <= overall["pass@1"] <= 1.0
    assert overall["no_answer_share"] < 1.0  # an instruct model follows the \boxed{} instruction at least sometimes
    assert results["settings"]["weights"].startswith("sha256:")
