"""`alignrl eval math500 --engine vllm`: the same engine registry, the same outputs as the transformers engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrl.evaluation import cli

pytestmark = pytest.mark.vllm


def outputs(out: Path) -> list[tuple[str, str, int]]:
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    return sorted((r["unique_id"], r["output"], r["num_tokens"]) for r in rows)


def test_math500_with_vllm_matches_hf(long_context_model_dir, math500_file, tmp_path):
    common = ["--model", str(long_context_model_dir), "--data", str(math500_file), "--max-tokens", "12", "--limit", "6",
              "--no-progress", "--grader-workers", "1"]
    assert cli.main([*common, "--out", str(tmp_path / "hf"), "--engine", "hf"]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "vllm"), "--engine", "vllm"]) == 0
    hf, vllm = outputs(tmp_path / "hf"), outputs(tmp_path / "vllm")
    assert len(hf) == 6 and all(tokens > 0 for _, _, tokens in hf)
    assert hf == vllm  # greedy: the same completions
    results = json.loads((tmp_path / "vllm" / "results.json").read_text())
    assert results["overall"]["problems"] == 6
