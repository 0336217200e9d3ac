"""Preemption (issue 17 item 8): a real ``alignrl train`` process stopped by a real SIGTERM or SIGUSR1 finishes its
step, saves a checkpoint and exits 75; ``--resume auto`` then continues it (and starts a fresh folder)."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

from alignrl.checkpoint import list_checkpoints
from alignrl.checkpoint_manifest import checkpoint_problem
from alignrl.preemption import PREEMPTED_EXIT, PreemptionWatch
from fault_helpers import cli, write_recipe


def logged_steps(run) -> list[int]:
    path = run / "metrics.jsonl"
    return [json.loads(line)["step"] for line in path.read_text().splitlines() if line] if path.is_file() else []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGUSR1])
def test_signal_saves_a_checkpoint_and_exits_75_then_resume_auto_continues(small_recipe, tmp_path, sig):
    recipe = small_recipe(max_steps=500, save_steps=0)
    run = tmp_path / "run"
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    process = cli("train", str(path), "--resume", "auto", wait=False)  # no checkpoint yet: starts fresh
    deadline = time.time() + 240
    while len(logged_steps(run)) < 2 and time.time() < deadline and process.poll() is None:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before the signal"
    process.send_signal(sig)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == PREEMPTED_EXIT, stderr[-3000:]
    steps = logged_steps(run)
    stopped = steps[-1]
    assert steps == list(range(1, stopped + 1)) and stopped < 500
    checkpoints = list_checkpoints(run)
    assert [p.name for p in checkpoints] == [f"checkpoint-{stopped:06d}"], "save_steps=0: only the stop saves"
    assert checkpoint_problem(checkpoints[0]) is None
    assert json.loads((checkpoints[0] / "trainer_state.json").read_text())["finished"] is False
    last = stderr.strip().splitlines()[-1]
    assert last.startswith(f"alignrl train: preempted: stopped on {sig.name} after step {stopped}; saved ") and \
        last.endswith(f"(exit status {PREEMPTED_EXIT})"), last
    if sig != signal.SIGTERM:
        return
    recipe["trainer"]["max_steps"] = stopped + 2
    done = cli("train", str(write_recipe(path, recipe)), "--resume", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    assert logged_steps(run) == list(range(1, stopped + 3))


def test_the_watch_only_sets_a_flag_and_restores_the_handlers():
    before = signal.getsignal(signal.SIGTERM)
    with PreemptionWatch() as watch:
        assert watch.received is None
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)
        assert watch.received == "SIGUSR1"
    assert signal.getsignal(signal.SIGTERM) is before


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_both_after_the_same_step(small_recipe, tmp_path):
    """2 CPU processes under ``accelerate launch``; only rank 1 gets SIGUSR1. The flag is all-reduced each step,
    so both ranks save the same checkpoint (with both ranks' state) and exit 75 instead of hanging in a collective."""
    import subprocess
    import sys

    import psutil

    from fault_helpers import REPO

    recipe = small_recipe(max_steps=500, save_steps=0)
    recipe["rollout"]["prompts_per_step"] = 4
    path = write_recipe(tmp_path / "recipe.yaml", recipe)
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "tests" / "core")])}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
               "29533", str(REPO / "tests" / "core" / "train_with_doubles.py"), "train", str(path)]
    launcher = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, start_new_session=True)
    run = tmp_path / "run"
    try:
        deadline = time.time() + 300
        while len(logged_steps(run)) < 2 and time.time() < deadline and launcher.poll() is None:
            time.sleep(0.05)
        assert launcher.poll() is None, "the run ended before the signal"
        ranks = {p.environ().get("RANK"): p for p in psutil.Process(launcher.pid).children(recursive=True)
                 if "train_with_doubles.py" in " ".join(p.cmdline())}
        ranks["1"].send_signal(signal.SIGUSR1)
        _, stderr = launcher.communicate(timeout=300)
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
    stopped = logged_steps(run)[-1]
    checkpoint = run / f"checkpoint-{stopped:06d}"
    assert checkpoint_problem(checkpoint) is None, stderr[-3000:]
    assert (checkpoint / "state_0.pt").is_file() and (checkpoint / "state_1.pt").is_file()
    assert stderr.count("alignrl train: preempted: stopped on") == 2, stderr[-3000:]
    assert launcher.returncode != 0
