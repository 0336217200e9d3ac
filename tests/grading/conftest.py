"""Fixtures for the grader tests: the shared data files and one worker pool per session."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alignrl.grading import GraderPool

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
TIMEOUT = 2.0  # seconds per math-verify call in these tests


def _load_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        pytest.skip(f"{path} not found (shared/ beside the repo)")
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


@pytest.fixture(scope="session")
def grader_dev() -> list[dict]:
    """The labelled grader-dev rows with a final-answer label."""
    rows = _load_jsonl(DATA / "grader-dev" / "math_test_labelled.jsonl")
    return [r for r in rows if r["label_kind"] == "final_answer" and r["label"] is not None]


@pytest.fixture(scope="session")
def math500() -> list[dict]:
    return _load_jsonl(DATA / "math500" / "test.jsonl")


@pytest.fixture(scope="session")
def timeout() -> float:
    return TIMEOUT


@pytest.fixture(scope="session", autouse=True)
def pool():
    """Two started workers for the whole session (a worker takes ~1-2 s to start), also serving as the
    process-wide pool behind ``grade()`` and the ``math`` reward so that the session starts workers once."""
    from alignrl.grading import pool as pool_module

    with GraderPool(num_workers=2, timeout=TIMEOUT) as shared:
        pool_module._SHARED = shared.start()
        yield shared
