"""Worker processes for math-verify with a hard per-answer timeout, plus an LRU cache of results.

Workers are fresh interpreters running :mod:`alignrl.grading.mvworker` (like multiprocessing's "spawn", but
without re-importing the caller's ``__main__``, so a training script's torch is not loaded into them and no
``if __name__ == "__main__"`` guard is needed). A worker that overruns its deadline is killed and replaced;
one that crashes is replaced; either way only that item's verdict says so. Safe to call from any thread:
batches from several threads take turns.
"""

from __future__ import annotations

import atexit
import logging
import os
import subprocess
import sys
import threading
import time
import weakref
from collections import OrderedDict, deque
from collections.abc import Iterable, Sequence
from dataclasses import replace
from multiprocessing.connection import Connection, wait

from alignrl.grading.config import GraderConfig, Verdict
from alignrl.grading.grader import Pending, prepare

log = logging.getLogger(__name__)
_WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mvworker.py")


class GraderWorkerError(RuntimeError):
    """Grader workers could not be started (the message says why)."""


class _Worker:
    def __init__(self, memory_mb: int, warm_up: bool) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, _WORKER_SCRIPT, str(to_child_r), str(from_child_w), str(memory_mb), str(int(warm_up))],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.tx = Connection(to_child_w, readable=False)
        self.rx = Connection(from_child_r, writable=False)
        self.ready = False
        self.job: int | None = None
        self.deadline = time.monotonic()

    def kill(self) -> None:
        for conn in (self.tx, self.rx):
            conn.close()
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass

    def ask_to_stop(self) -> None:
        try:
            self.tx.send(None)
        except (OSError, ValueError):
            pass


class GraderPool:
    """``num_workers`` math-verify processes; :meth:`grade_many` grades a batch, in input order.

    ``timeout`` (seconds per answer sent to math-verify) overrides ``config.timeout``. ``cache_size`` worker
    results, timeouts included (an answer that timed out once is not retried), are kept, keyed on (cleaned
    answer, gold, comparison settings). ``memory_mb`` caps each worker's address space (0: no cap);
    ``start_timeout`` bounds a worker's start-up. Workers start on first need, or with :meth:`start`.
    """

    def __init__(self, num_workers: int = 2, timeout: float | None = None, config: GraderConfig | None = None,
                 cache_size: int = 100_000, memory_mb: int = 4096, start_timeout: float = 120.0) -> None:
        if num_workers < 1:
            raise ValueError("num_workers must be >= 1")
        self.config = config or GraderConfig()
        if timeout is not None:
            self.config = replace(self.config, timeout=float(timeout))
        self.num_workers, self.cache_size = num_workers, cache_size
        self.memory_mb, self.start_timeout = memory_mb, start_timeout
        self._workers: list[_Worker] = []
        self._cache: OrderedDict[tuple, tuple[bool, str, str]] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self.stats = {"cache_hits": 0, "verified": 0, "timeouts": 0, "crashes": 0}
        _POOLS.add(self)

    # -- public API ---------------------------------------------------------------------------------------
    def grade(self, output: str, gold: str, config: GraderConfig | None = None) -> Verdict:
        return self.grade_many([(output, gold)], config)[0]

    def grade_many(self, pairs: Iterable[tuple[str, str]], config: GraderConfig | None = None) -> list[Verdict]:
        """One :class:`Verdict` per ``(output, gold)`` pair, in input order; bounded by ``timeout`` per answer."""
        cfg = config or self.config
        items = [prepare(output, gold, cfg) for output, gold in pairs]
        pending = [i for i, item in enumerate(items) if isinstance(item, Pending)]
        for i, verdict in zip(pending, self.verify_pending([items[i] for i in pending], cfg)):
            items[i] = verdict
        return items  # type: ignore[return-value]

    def verify_pending(self, items: Sequence[Pending], config: GraderConfig | None = None) -> list[Verdict]:
        """Verdicts for items :func:`~alignrl.grading.grader.prepare` left undecided (cache, then workers)."""
        cfg = config or self.config
        keys = [(p.answer, p.gold, cfg.key()) for p in items]
        out: list[tuple[bool, str, str] | None] = [None] * len(items)
        with self._lock:
            if self._closed:
                raise RuntimeError("GraderPool is closed")
            todo: dict[tuple, list[int]] = {}
            for i, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    self.stats["cache_hits"] += 1
                    out[i] = hit
                else:
                    todo.setdefault(key, []).append(i)
            jobs = list(todo)
            tasks = [(a, g, cfg.float_rounding, cfg.strict) for a, g, _ in jobs]
            for key, result in zip(jobs, self._run(tasks, cfg.timeout)):
                for i in todo[key]:
                    out[i] = result
                if self.cache_size > 0:  # timeouts too: a policy repeating a pathological answer costs one
                    self._cache[key] = result
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return [Verdict(ok, p.extracted, reason, method) for p, (ok, reason, method) in zip(items, out)]

    def start(self) -> GraderPool:
        """Start all workers now and wait until they are ready (otherwise they start on first need)."""
        with self._lock:
            self._start_workers()
            deadline = time.monotonic() + self.start_timeout
            while starting := {w.rx: w for w in self._workers if not w.ready}:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise GraderWorkerError(f"grader workers did not start within {self.start_timeout:.0f} s")
                for conn in wait(list(starting), timeout=left):
                    try:
                        conn.recv()
                    except (EOFError, OSError):
                        raise GraderWorkerError("a grader worker died at start-up; see its stderr above") from None
                    starting[conn].ready = True
        return self

    def close(self) -> None:
        """Stop the workers (also done at interpreter exit)."""
        self._closed = True
        workers, self._workers = self._workers, []
        for w in workers:
            w.ask_to_stop()
        deadline = time.monotonic() + 1.0
        for w in workers:
            try:
                w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            w.kill()

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- dispatch -----------------------------------------------------------------------------------------
    def _spawn(self, warm_up: bool = True) -> _Worker:
        try:
            w = _Worker(self.memory_mb, warm_up)
        except OSError as err:
            raise GraderWorkerError(f"cannot start a grader worker ({sys.executable} {_WORKER_SCRIPT}): {err}") \
                from err
        w.deadline = time.monotonic() + self.start_timeout
        return w

    def _start_workers(self) -> None:
        if self._closed:
            raise RuntimeError("GraderPool is closed")
        while len(self._workers) < self.num_workers:
            self._workers.append(self._spawn())

    def _replace(self, w: _Worker) -> None:
        w.kill()
        if self._closed:
            raise RuntimeError("GraderPool is closed")
        self._workers[self._workers.index(w)] = self._spawn(warm_up=False)  # back in service sooner

    def _run(self, tasks: list[tuple], timeout: float) -> list[tuple[bool, str, str]]:
        """Results ``(correct, reason, method)`` of ``tasks`` on the workers; each bounded by ``timeout``."""
        if not tasks:
            return []
        try:
            return self._dispatch(tasks, timeout)
        except BaseException:  # Ctrl-C or no workers: a busy worker's late answer must not reach the next batch
            for w in [w for w in self._workers if w.job is not None]:
                w.kill()
                self._workers.remove(w)
            raise

    def _dispatch(self, tasks: list[tuple], timeout: float) -> list[tuple[bool, str, str]]:
        results: list[tuple[bool, str, str] | None] = [None] * len(tasks)
        self._start_workers()
        queue = deque(range(len(tasks)))
        start_failures = 0
        while queue or any(w.job is not None for w in self._workers):
            now = time.monotonic()
            for w in self._workers:
                if w.ready and w.job is None and queue:
                    j = queue.popleft()
                    try:
                        w.tx.send(tasks[j])
                    except (OSError, ValueError):  # died while idle: not this task's fault
                        queue.appendleft(j)
                        self._replace(w)
                        continue
                    w.job, w.deadline = j, now + timeout
            active = [w for w in self._workers if not w.ready or w.job is not None]
            wait_for = max(0.0, min(w.deadline for w in active) - now) if active else 0.0
            ready = wait([w.rx for w in active], timeout=wait_for)
            now = time.monotonic()
            for w in list(active):
                if w.rx in ready:
                    try:
                        msg = w.rx.recv()
                    except (EOFError, OSError):
                        if not w.ready:
                            start_failures += 1
                            if start_failures > 2 * self.num_workers:
                                raise GraderWorkerError(
                                    f"grader workers keep dying at start-up ({sys.executable} {_WORKER_SCRIPT});"
                                    " is math-verify installed? see the workers' stderr above") from None
                        elif w.job is not None:
                            log.warning("grader worker crashed on answer %r", tasks[w.job][0][:200])
                            self.stats["crashes"] += 1
                            results[w.job] = (False, "unparsable", "crash")
                        self._replace(w)
                        continue
                    if not w.ready:
                        w.ready = True
                    elif w.job is not None:
                        ok, reason = msg
                        results[w.job] = (bool(ok), str(reason), "math_verify")
                        self.stats["verified"] += 1
                        w.job = None
                elif now >= w.deadline:
                    if not w.ready:
                        raise GraderWorkerError(f"a grader worker did not start within {self.start_timeout:.0f} s")
                    log.info("grader timeout (%.1f s) on answer %r", timeout, tasks[w.job][0][:200])
                    self.stats["timeouts"] += 1
                    results[w.job] = (False, "timeout", "timeout")
                    self._replace(w)
        return results  # type: ignore[return-value]


_POOLS: weakref.WeakSet[GraderPool] = weakref.WeakSet()
_SHARED: GraderPool | None = None
_SHARED_LOCK = threading.Lock()


def shared_pool() -> GraderPool:
    """The process-wide pool used by :func:`~alignrl.grading.grade` and the ``math`` reward (made on first use)."""
    global _SHARED  # noqa: PLW0603
    with _SHARED_LOCK:
        if _SHARED is None or _SHARED._closed:
            _SHARED = GraderPool(num_workers=max(1, min(2, os.cpu_count() or 1)))
        return _SHARED


@atexit.register
def _close_all() -> None:
    for pool in list(_POOLS):
        pool.close()


def _forget_workers_after_fork() -> None:
    """A forked child (e.g. a data-loader worker) starts its own workers instead of sharing its parent's."""
    for pool in list(_POOLS):
        pool._workers, pool._lock = [], threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)
