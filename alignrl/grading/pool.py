"""Grading batches on math-verify worker processes, with an LRU cache of results.

Workers are fresh interpreters running :mod:`alignrl.grading.mvworker` (like multiprocessing's "spawn", but
without re-importing the caller's ``__main__``, so a training script's torch is not loaded into them and no
``if __name__ == "__main__"`` guard is needed). A worker that overruns its deadline is killed and replaced;
one that crashes is replaced; either way only that item's verdict says so. Workers die with this process, also
when it is killed by SIGKILL or SIGTERM while a worker computes (on Linux; elsewhere a watchdog in the worker
notices once the computation ends).

Safe to call from any thread, with a time bound: calls share the workers item by item, so no call is queued
behind another thread's batch (details in :mod:`alignrl.grading.workers`). A call returns within the sum of its
own items' times (each at most its timeout) plus, at its start and after each of its own items that timed out
or crashed, at most one wait for a worker: none if one is free or an idle reserve worker is there (kept after
the first time calls contended), else ``0.5 s + S`` while an extra worker starts (``S`` a worker's start-up:
about 2 s, more on a loaded machine; up to ``num_workers`` extras, beyond which a call waits for
the next worker to free).
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import replace

from alignrl.grading.config import GraderConfig, Verdict
from alignrl.grading.grader import Pending, prepare
from alignrl.grading.workers import Dispatcher, GraderWorkerError, Result, _Worker

__all__ = ["GraderPool", "GraderWorkerError", "shared_pool"]


class GraderPool:
    """``num_workers`` math-verify processes; :meth:`grade_many` grades a batch, in input order.

    ``timeout`` (seconds per answer sent to math-verify) overrides ``config.timeout``. ``cache_size`` worker
    results, timeouts included (an answer that timed out once is not retried), are kept, keyed on (cleaned
    answer, gold, comparison settings). ``memory_mb`` caps each worker's address space (0: no cap);
    ``start_timeout`` bounds a worker's start-up. Workers start on first need, or with :meth:`start`; up to
    ``num_workers`` extra ones start while calls from other threads would otherwise wait (see the module doc).
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
        self._cache: OrderedDict[tuple, Result] = OrderedDict()
        self._lock = threading.Lock()
        self._closed = False
        self.stats = {"cache_hits": 0, "verified": 0, "timeouts": 0, "crashes": 0}
        self._new_dispatcher()
        _POOLS.add(self)

    def _new_dispatcher(self) -> None:
        self._dispatcher = Dispatcher(self.num_workers, self.memory_mb, self.start_timeout, self.stats)
        self._finalizer = weakref.finalize(self, self._dispatcher.close, False)  # a dropped pool stops its workers
        self._finalizer.atexit = False  # _close_all does it at exit, waiting

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
        out: list[Result | None] = [None] * len(items)
        todo: dict[tuple, list[int]] = {}
        with self._lock:
            if self._closed:
                raise RuntimeError("GraderPool is closed")
            for i, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
                    self.stats["cache_hits"] += 1
                    out[i] = hit
                else:
                    todo.setdefault(key, []).append(i)
        jobs = list(todo)
        results = self._dispatcher.run([(a, g, cfg.float_rounding, cfg.strict) for a, g, _ in jobs], cfg.timeout)
        with self._lock:
            for key, result in zip(jobs, results):
                for i in todo[key]:
                    out[i] = result
                if self.cache_size > 0:  # timeouts too: a policy repeating a pathological answer costs one
                    self._cache[key] = result
                    if len(self._cache) > self.cache_size:
                        self._cache.popitem(last=False)
        return [Verdict(ok, p.extracted, reason, method) for p, (ok, reason, method) in zip(items, out)]

    def start(self) -> GraderPool:
        """Start all workers now and wait until they are ready (otherwise they start on first need)."""
        if self._closed:
            raise RuntimeError("GraderPool is closed")
        self._dispatcher.start()
        return self

    def worker_pids(self) -> list[int]:
        """Process ids of the live workers (for monitoring)."""
        return self._dispatcher.pids()

    @property
    def _workers(self) -> list[_Worker]:
        """The worker processes (each with ``proc``, ``ready``, ``job``), for tests and benchmarks."""
        return self._dispatcher.workers

    def close(self) -> None:
        """Stop the workers (also done at interpreter exit, or when the pool is garbage-collected)."""
        self._closed = True
        self._finalizer.detach()
        self._dispatcher.close()

    def __enter__(self) -> GraderPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


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
    global _SHARED_LOCK  # noqa: PLW0603
    _SHARED_LOCK = threading.Lock()
    for pool in list(_POOLS):
        pool._lock = threading.Lock()
        pool._finalizer.detach()
        pool._dispatcher.abandon()
        pool._new_dispatcher()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_workers_after_fork)
