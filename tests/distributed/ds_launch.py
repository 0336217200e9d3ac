"""Process helpers for the DeepSpeed and Slurm tests: one process, or two under ``accelerate launch`` (CPU, gloo).

Every launch runs in a session of its own; a hung or killed run is ended with every process it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
WORKER = REPO / "tests" / "distributed" / "ds_worker.py"
ACCELERATE_CONFIGS = REPO / "recipes" / "accelerate"


def launch_env(**extra: str) -> dict[str, str]:
    """The environment of a test launch: one thread per rank, DeepSpeed on the CPU, the test doubles importable."""
    paths = [REPO / "tests", REPO / "tests" / "core", REPO / "tests" / "distributed"]
    return {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu",
            "PYTHONPATH": os.pathsep.join(str(p) for p in paths), **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def single(args: list[str]) -> list[str]:
    """The worker in this process's Python, without a launcher (one process, no DeepSpeed)."""
    return [sys.executable, str(WORKER), *args]


def two_ranks(config: str, args: list[str]) -> list[str]:
    """The worker as two CPU processes under ``accelerate launch --config_file recipes/accelerate/<config>``."""
    return [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ACCELERATE_CONFIGS / config),
            "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no",
            "--main_process_port", str(free_port()), str(WORKER), *args]


def start(command: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    handle = log.open("w")
    return subprocess.Popen(command, cwd=REPO, env=env or launch_env(), stdout=handle, stderr=subprocess.STDOUT,
                            start_new_session=True)


def kill(process: subprocess.Popen) -> None:
    """SIGKILL the launch and every process under it. (torchrun starts each rank in a session of its own, so
    killing the launcher's process group alone would leave the ranks running.)"""
    import psutil

    try:
        tree = psutil.Process(process.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    for proc in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.kill()
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    psutil.wait_procs(tree, timeout=30)


def run(command: list[str], log: Path, timeout: float = 600, env: dict[str, str] | None = None) -> None:
    """Run to completion; a failure or a hang fails the test with the end of the log."""
    process = start(command, log, env)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill(process)
        pytest.fail(f"{' '.join(command[:6])}... hung for {timeout:.0f} s:\n{tail(log)}")
    if process.returncode != 0:
        pytest.fail(f"{' '.join(command[:6])}... exited {process.returncode}:\n{tail(log)}")


def tail(log: Path, chars: int = 4000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.exists() else ""
