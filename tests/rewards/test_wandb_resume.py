"""A resumed run continues the same W&B run (MetricsLogger), with a fake ``wandb`` module standing in for W&B."""

from __future__ import annotations

import sys
import types

import pytest

from alignrl.logging.metrics import WANDB_ID_FILE, MetricsLogger


class _FakeRun:
    def __init__(self, log: list) -> None:
        self.log_calls = log

    def log(self, record: dict, step: int) -> None:
        self.log_calls.append((step, record))

    def finish(self) -> None:
        self.log_calls.append("finish")


@pytest.fixture()
def fake_wandb(monkeypatch) -> types.SimpleNamespace:
    """A ``wandb`` module recording every ``init`` call's kwargs; ids are generated as id-0, id-1, ..."""
    record = types.SimpleNamespace(inits=[], logged=[], generated=0)

    def generate_id() -> str:
        record.generated += 1
        return f"id-{record.generated - 1}"

    def init(**kwargs):
        record.inits.append(kwargs)
        return _FakeRun(record.logged)

    module = types.ModuleType("wandb")
    module.init = init
    module.util = types.SimpleNamespace(generate_id=generate_id)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return record


def test_resume_continues_the_same_wandb_run(tmp_path, fake_wandb):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    first = MetricsLogger(run_dir, ["wandb"], "demo", {"lr": 1.0})
    first.log(1, {"reward_mean": 0.5})
    first.close()
    stored = (run_dir / WANDB_ID_FILE).read_text().strip()
    assert stored == "id-0"
    assert fake_wandb.inits[0]["id"] == "id-0" and fake_wandb.inits[0]["resume"] == "allow"
    assert fake_wandb.inits[0]["name"] == "demo" and fake_wandb.inits[0]["dir"] == str(run_dir)
    assert fake_wandb.logged == [(1, {"step": 1, "reward_mean": 0.5}), "finish"]

    resumed = MetricsLogger(run_dir, ["wandb"], "demo", {"lr": 1.0}, resume_step=1)
    resumed.close()
    assert fake_wandb.inits[1]["id"] == stored and fake_wandb.inits[1]["resume"] == "must"
    assert fake_wandb.generated == 1  # no new id on resume
    assert (run_dir / WANDB_ID_FILE).read_text().strip() == stored


def test_new_runs_get_new_ids_and_old_runs_without_an_id_start_one(tmp_path, fake_wandb):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    MetricsLogger(a, ["wandb"], None, {}).close()
    MetricsLogger(b, ["wandb"], None, {}).close()
    assert [i["id"] for i in fake_wandb.inits] == ["id-0", "id-1"]
    old = tmp_path / "old"  # resumed, but its first start logged to W&B before ids were stored
    old.mkdir()
    MetricsLogger(old, ["wandb"], None, {}, resume_step=3).close()
    assert fake_wandb.inits[-1]["id"] == "id-2" and fake_wandb.inits[-1]["resume"] == "allow"
    assert (old / WANDB_ID_FILE).read_text().strip() == "id-2"


def test_no_wandb_no_id_file_and_disabled_ranks_do_nothing(tmp_path, fake_wandb):
    MetricsLogger(tmp_path, [], None, {}).close()
    MetricsLogger(tmp_path, ["wandb"], None, {}, enabled=False).close()
    assert fake_wandb.inits == [] and not (tmp_path / WANDB_ID_FILE).exists()
