"""Grader workers under faults: they die with a killed parent even mid-computation, survive the thread that made
the pool, and one thread's slow batch does not hold up another thread's call (issue 17, items 1 and 6)."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from alignrl.grading import GraderConfig, GraderPool

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

# math-verify spends minutes (holding the GIL) on this pair; the example
SLOW_ANSWER, SLOW_GOLD = "\\boxed{10^{1000000000}}", "10^{10^{10}}"
BUSY_CPU_S = 3.0  # a worker's start-up and warm-up take about 1 s of CPU: past 3 s it is computing
REWARD_SCRIPT = """
import sys, threading
from alignrl.grading import shared_pool
from alignrl.rewards import MathReward

# the pool is made and started from a thread that then ends (its workers must not die with that thread)
maker = threading.Thread(target=lambda: shared_pool().start())
maker.start()
maker.join()
reward = MathReward(answer_field="answer", timeout=120)  # what `alignrl train` calls for the `math` reward
print(" ".join(map(str, shared_pool().worker_pids())), flush=True)
reward.grade([sys.argv[1]] * 2, {"answer": [sys.argv[2], sys.argv[2] + "+0"]})  # two items: both workers busy
"""


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _alive(pid: int) -> bool:
    """A live (not zombie) grader worker with this pid."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        return state != "Z" and b"mvworker.py" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, IndexError):
        return False


def _workers_of(parent: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if ppid == parent and _alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _wait_until_busy(proc: subprocess.Popen, pids: list[int] | None = None, limit: float = 120.0) -> list[int]:
    """The parent's worker pids, once one of them is computing (holds the GIL)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"the grading process ended early: {proc.communicate()}"
        current = pids or _workers_of(proc.pid)
        try:
            if any(_cpu_seconds(pid) > BUSY_CPU_S for pid in current):
                return current
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError("no grader worker got busy")


def _assert_gone_soon(pids: list[int], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    try:
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in pids if _alive(pid)], f"workers still alive {within:.0f} s after the parent died"
    finally:
        for pid in pids:  # never leave a test's orphan burning a core
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_die_with_killed_grade_command(tmp_path, sig):
    data = tmp_path / "slow.jsonl"
    data.write_text(json.dumps({"output": SLOW_ANSWER, "gold": SLOW_GOLD}) + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "alignrl.cli", "grade", "--workers", "1", "--timeout", "120",
                             "--no-progress", str(data)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    pids: list[int] = []
    try:
        pids = _wait_until_busy(proc)
        proc.send_signal(sig)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _assert_gone_soon(pids or _workers_of(proc.pid))
    assert proc.returncode != 0


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM], ids=["SIGKILL", "SIGTERM"])
def test_workers_die_with_killed_training_reward(sig):
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(REWARD_SCRIPT), SLOW_ANSWER, SLOW_GOLD],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        line = proc.stdout.readline()  # type: ignore[union-attr]
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2, (line, proc.stderr.read() if proc.poll() is not None else "")  # type: ignore
        assert sorted(_workers_of(proc.pid)) == sorted(pids)  # the pool reports its workers
        _wait_until_busy(proc, pids)
        proc.send_signal(sig)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        _assert_gone_soon(pids or _workers_of(proc.pid))
    assert proc.returncode != 0


def test_workers_outlive_the_thread_that_started_them():
    holder: dict[str, GraderPool] = {}
    maker = threading.Thread(target=lambda: holder.update(pool=GraderPool(num_workers=1).start()))
    maker.start()
    maker.join()
    pool = holder["pool"]
    with pool:
        pids = pool.worker_pids()
        time.sleep(0.5)  # a parent-death signal tied to the ended thread would have fired by now
        assert all(_alive(pid) for pid in pids)
        assert pool.grade("\\boxed{x^2+2x+1}", "(x+1)^2").correct
        assert pool.worker_pids() == pids and pool.stats["crashes"] == 0
    _assert_gone_soon(pids)  # and close() stops them


def test_single_thread_never_starts_extra_workers():
    slow = GraderConfig(timeout=1.0)
    seen, stop = [], threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.append(len(pool._workers))
            time.sleep(0.02)

    with GraderPool(num_workers=1) as pool:
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            verdicts = pool.grade_many([("\\boxed{9^{9^{9^{9}}}+y}", "1"), ("\\boxed{2x}", "x+x")], slow)
        finally:
            stop.set()
            watcher.join()
        assert [v.reason for v in verdicts] == ["timeout", "correct"]
        assert max(seen) == 1


def test_a_call_is_not_queued_behind_another_threads_slow_batch():
    """Before per-item scheduling the fast call waited for the whole slow batch (here >= 50 s)."""
    slow_timeout, n_slow = 5.0, 20
    slow = [(f"\\boxed{{9^{{9^{{9^{{9}}}}}}+y_{i}}}", "1") for i in range(n_slow)]
    outcome: dict[str, object] = {}

    def slow_caller() -> None:
        try:
            outcome["verdicts"] = pool.grade_many(slow, GraderConfig(timeout=slow_timeout))
        except RuntimeError as err:  # the pool is closed under it at the end of the test
            outcome["error"] = err

    with GraderPool(num_workers=2) as pool:
        pool.start()
        caller = threading.Thread(target=slow_caller)
        caller.start()
        while sum(w.job is not None for w in pool._workers) < 2:  # both workers hold slow items
            assert caller.is_alive()
            time.sleep(0.02)
        timings = []
        for i in range(3):
            start = time.monotonic()
            verdict = pool.grade(f"\\boxed{{{i + 2}x + x}}", f"{i + 3}x", GraderConfig(timeout=slow_timeout))
            timings.append(time.monotonic() - start)
            assert verdict.correct, verdict
        still_busy = caller.is_alive()
    caller.join(timeout=30)
    # the first call waits for a reserve worker to start (~2 s; 10-20 s measured at load 13 on 2 cores); the
    # later ones find it idle
    assert timings[0] < 40.0, timings
    assert max(timings[1:]) < 2.5, timings  # less than one slow item's timeout
    assert still_busy, "the slow batch ended first: the test proves nothing"


def test_forked_child_starts_its_own_workers():
    """A forked child (a data-loader worker) gets its own workers; the parent's are left alone."""
    with GraderPool(num_workers=1) as pool:
        parent_pids = pool.start().worker_pids()
        child = os.fork()
        if child == 0:  # pragma: no cover  (the child's own exit status is the check)
            ok = pool.grade("\\boxed{2x+2}", "2(x+1)").correct and not set(pool.worker_pids()) & set(parent_pids)
            pool.close()
            os._exit(0 if ok else 1)
        _, status = os.waitpid(child, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        assert pool.worker_pids() == parent_pids
        assert pool.grade("\\boxed{3x+3}", "3(x+1)").correct and pool.stats["crashes"] == 0


def test_dropped_pool_stops_its_workers():
    """A pool dropped without close() (as a MATH-500 evaluation does) does not leave its workers running."""
    pool = GraderPool(num_workers=1)
    assert pool.grade("\\boxed{x^2-1}", "(x-1)(x+1)").correct
    pids = pool.worker_pids()
    del pool
    gc.collect()
    _assert_gone_soon(pids)
