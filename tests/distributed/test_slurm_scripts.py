"""The job scripts' preemption and requeue logic (slurm/common.sh) with stand-ins for scontrol and scancel, so it
runs anywhere in a second; test_slurm.py runs the scripts themselves on a real Slurm."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from ds_launch import REPO

SCRIPTS = ("train.sbatch", "train_single_node.sbatch", "common.sh")


@pytest.fixture()
def fake_slurm(tmp_path) -> tuple[dict[str, str], Path]:
    """``scontrol`` and ``scancel`` that only record how they were called."""
    record = tmp_path / "calls"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("scontrol", "scancel"):
        (bin_dir / tool).write_text(f'#!/bin/bash\necho "{tool} $*" >> {record}\n')
        (bin_dir / tool).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SLURM_JOB_ID": "42"}
    return env, record


def job(body: str, env: dict[str, str], **extra: str) -> subprocess.Popen:
    """A job script's tail: source common.sh, run ``body`` as the training step, then ``finish``."""
    script = f". slurm/common.sh\nrun_and_wait bash -c {body!r}\nfinish $?\n"
    return subprocess.Popen(["bash", "-c", script], cwd=REPO, env={**env, **extra}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finished(process: subprocess.Popen, record: Path) -> tuple[int, list[str], str]:
    _, stderr = process.communicate(timeout=60)
    calls = record.read_text().splitlines() if record.exists() else []
    return process.returncode, calls, stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_scripts_parse(name):
    assert subprocess.run(["bash", "-n", str(REPO / "slurm" / name)]).returncode == 0


def test_success_ends_the_job(fake_slurm):
    env, record = fake_slurm
    assert finished(job("exit 0", env), record)[:2] == (0, [])


def test_status_75_requeues(fake_slurm):
    env, record = fake_slurm
    status, calls, stderr = finished(job("exit 75", env), record)
    assert (status, calls) == (0, ["scontrol requeue 42"]) and "preempted; requeueing job 42" in stderr


def test_the_warning_is_forwarded_and_the_launchers_status_1_requeues(fake_slurm):
    """--signal=B:USR1@120 reaches the batch script during the step: it goes on to the steps' processes at once
    (not after the step ends), and the launcher's status 1 counts as a preemption."""
    env, record = fake_slurm
    process = job("sleep 3; exit 1", env)
    time.sleep(1)
    process.send_signal(signal.SIGUSR1)
    status, calls, stderr = finished(process, record)
    assert calls == ["scancel --signal=USR1 42", "scontrol requeue 42"], stderr
    assert status == 0 and "USR1 received" in stderr


def test_a_failure_at_start_up_is_not_requeued(fake_slurm):
    env, record = fake_slurm
    status, calls, stderr = finished(job("exit 1", env), record)
    assert (status, calls) == (1, []) and "not requeued" in stderr


def test_a_failure_after_a_while_is_requeued_unless_disabled(fake_slurm):
    env, record = fake_slurm
    assert finished(job("exit 1", env, REQUEUE_MIN_SECONDS="0"), record)[:2] == (0, ["scontrol requeue 42"])
    record.unlink()
    assert finished(job("exit 1", env, REQUEUE_MIN_SECONDS="0", REQUEUE_ON_FAILURE="0"), record)[:2] == (1, [])


def test_requeues_stop_at_the_limit(fake_slurm):
    env, record = fake_slurm
    status, calls, stderr = finished(job("exit 75", env, SLURM_RESTART_COUNT="3", MAX_REQUEUES="3"), record)
    assert (status, calls) == (75, []) and "restarts: 3" in stderr
