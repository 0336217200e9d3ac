"""Math-verify worker processes, and the thread that schedules items on them fairly across calling threads.

A :class:`Dispatcher` owns one thread, and that thread starts, feeds, times and stops every worker. Starting
workers from one long-lived thread matters on Linux: a worker's parent-death signal (set in
:mod:`alignrl.grading.mvworker`) fires when the *thread* that started it ends, so workers started from a
short-lived caller thread would be killed with it. The dispatcher thread ends only when the pool closes or the
process dies, and the workers die with it, even when the process is killed by SIGKILL.

Scheduling is per item. Each call (:meth:`Dispatcher.run`) is a batch. A free worker takes the next item of the
batch with the fewest items in flight (ties: the batch it served last, then the one served longest ago), so
calls from several threads share the workers item by item instead of queueing whole batches behind each other.
Besides the ``num_workers`` workers there are *extras*, which serve only batches with nothing in flight: when a
batch has waited ``grace`` seconds with nothing in flight and no worker is starting, an extra starts for it (at
most ``max_extra``); an extra idle for ``linger`` seconds stops, except ``reserve`` of them, kept idle for the
next such call (the reserve also starts the first time two calls overlap). A single-threaded user never starts
an extra.

The bound this gives, with ``S`` a worker's start-up (about 2 s; more on a loaded machine): a call
with nothing in flight gets a free worker at once, an idle reserve at once (after the first contention), or an
extra within ``grace + S`` (while fewer than ``max_extra`` extras are busy; else the next worker that frees).
Once it has a worker it keeps one until its queue is empty, except that an item that times out or crashes
takes its worker down. So a call returns within the sum of its own items' times (each at most its timeout),
plus at most ``grace + S`` at its start and after each of its items that timed out or crashed.
"""

from __future__ import annotations

import itertools
import logging
import os
import subprocess
import sys
import threading
import time
from collections import deque
from multiprocessing.connection import Connection, wait

from alignrl.grading.mvworker import WARMUP

log = logging.getLogger(__name__)
WORKER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mvworker.py")
Result = tuple[bool, str, str]  # (correct, reason, method)
CLOSED = "GraderPool is closed"


class GraderWorkerError(RuntimeError):
    """Grader workers could not be started (the message says why)."""


class _Batch:
    """One call's tasks: a queue of indices not yet sent, results as they come, an event when all are in."""

    def __init__(self, tasks: list[tuple], timeout: float, want_ready: bool = False) -> None:
        self.tasks, self.timeout, self.want_ready = tasks, timeout, want_ready
        self.results: list[Result | None] = [None] * len(tasks)
        self.queue = deque(range(len(tasks)))
        self.in_flight = 0
        self.left = len(tasks)
        self.served = 0  # stamp of the last dispatch (round robin among equals)
        self.starved_since: float | None = time.monotonic()  # queued items, nothing in flight
        self.lost = False  # its item took a worker down: the replacement is for it, not an extra
        self.error: tuple[type[BaseException], str] | None = None
        self.done = threading.Event()

    def fail(self, kind: type[BaseException], message: str) -> None:
        self.queue.clear()
        self.error = (kind, message)
        self.done.set()


class _Worker:
    """One ``mvworker.py`` process and its two pipes. Every worker warms up before it reports ready (about 1 s
    of CPU), so that no item pays math-verify's first-call costs (0.3-0.5 s of CPU) inside its timeout."""

    def __init__(self, memory_mb: int, start_timeout: float, extra: bool = False) -> None:
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                [sys.executable, WORKER_SCRIPT, str(to_child_r), str(from_child_w), str(memory_mb),
                 str(len(WARMUP)), str(os.getpid())],
                pass_fds=(to_child_r, from_child_w), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        except BaseException:
            os.close(to_child_w)
            os.close(from_child_r)
            raise
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self.tx = Connection(to_child_w, readable=False)
        self.rx = Connection(from_child_r, writable=False)
        self.ready = False
        self.extra = extra  # started for calls that would otherwise wait: serves only batches with nothing in flight
        self.job: int | None = None  # index of the task in flight within ``batch``
        self.batch: _Batch | None = None
        self.last: _Batch | None = None
        self.deadline = time.monotonic() + start_timeout  # start-up, then the task in flight
        self.idle_since = time.monotonic()

    def close_pipes(self) -> None:
        for conn in (self.tx, self.rx):
            conn.close()

    def kill(self) -> None:
        self.close_pipes()
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


def stop_workers(workers: list[_Worker], grace: float = 1.0) -> None:
    """Ask ``workers`` to exit, wait up to ``grace`` seconds in all, then kill what is left."""
    for w in workers:
        w.ask_to_stop()
    deadline = time.monotonic() + grace
    for w in workers:
        try:
            w.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        w.kill()


class Dispatcher:
    """``num_workers`` worker processes (plus extras under contention) run by one thread; see the module doc."""

    def __init__(self, num_workers: int, memory_mb: int, start_timeout: float, stats: dict[str, int],
                 grace: float = 0.5, linger: float = 5.0, max_extra: int | None = None, reserve: int = 1) -> None:
        self.num_workers, self.memory_mb, self.start_timeout = num_workers, memory_mb, start_timeout
        self.stats, self.grace, self.linger, self.reserve = stats, grace, linger, reserve
        self.max_extra = num_workers if max_extra is None else max_extra
        self.workers: list[_Worker] = []  # touched only by the dispatcher thread (others may read it)
        self._batches: list[_Batch] = []
        self._lock = threading.RLock()  # re-entrant: a garbage-collected pool may close it from its own thread
        self._thread: threading.Thread | None = None
        self._wake_r = self._wake_w = -1
        self._closing = False
        self._stamp = itertools.count(1)
        self._start_failures = 0
        self._started = False  # workers were started: keep num_workers of them up until closed or failed

    # -- callers' side --------------------------------------------------------------------------------------
    def run(self, tasks: list[tuple], timeout: float) -> list[Result]:
        """Results of ``tasks`` (``(answer, gold, float_rounding, strict)``), each bounded by ``timeout``."""
        if not tasks:
            return []
        batch = self._submit(_Batch(tasks, timeout))
        self._wait(batch)
        return batch.results  # type: ignore[return-value]

    def start(self) -> None:
        """Start ``num_workers`` workers and wait until they are ready."""
        self._wait(self._submit(_Batch([], 0.0, want_ready=True)))

    def pids(self) -> list[int]:
        return [w.proc.pid for w in list(self.workers)]

    def close(self, wait: bool = True) -> None:
        """Stop the thread and the workers; with ``wait``, return once they are stopped."""
        with self._lock:
            self._closing = True
            thread = self._thread
            self._wake()
        if wait and thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)

    def abandon(self) -> None:
        """In a forked child: drop the parent's workers without telling them anything."""
        for w in self.workers:
            w.close_pipes()
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self.workers, self._batches, self._thread, self._started = [], [], None, False
        self._wake_r = self._wake_w = -1
        self._lock = threading.RLock()

    def _submit(self, batch: _Batch) -> _Batch:
        with self._lock:
            if self._closing:
                raise RuntimeError(CLOSED)
            self._batches.append(batch)
            if self._thread is None:
                if self._wake_r < 0:
                    self._wake_r, self._wake_w = os.pipe()
                    os.set_blocking(self._wake_r, False)
                    os.set_blocking(self._wake_w, False)
                self._thread = threading.Thread(target=self._serve, name="alignrl-grader", daemon=True)
                self._thread.start()
            self._wake()
        return batch

    def _wait(self, batch: _Batch) -> None:
        try:
            while not batch.done.wait(1.0):
                with self._lock:  # defensive: the thread fails its batches as it ends; never hang regardless
                    if self._thread is None and batch in self._batches:
                        batch.fail(GraderWorkerError, "the grader dispatcher thread is gone")
        except BaseException:  # Ctrl-C: queued items are dropped, an item in flight ends by its timeout
            with self._lock:
                if batch in self._batches:
                    self._batches.remove(batch)
                batch.queue.clear()
            raise
        if batch.error is not None:
            kind, message = batch.error
            raise kind(message)

    def _wake(self) -> None:
        """Interrupt the thread's wait (call with the lock held: the thread closes the pipe under it)."""
        try:
            os.write(self._wake_w, b"\0")
        except (BlockingIOError, OSError):  # full: a wake-up is pending anyway; closed: nothing to wake
            pass

    # -- the dispatcher thread ------------------------------------------------------------------------------
    def _serve(self) -> None:
        error: tuple[type[BaseException], str] = (RuntimeError, CLOSED)
        try:
            while self._step():
                pass
        except BaseException as err:  # noqa: BLE001  (a bug here must fail the callers, not hang them)
            log.exception("grader dispatcher failed")
            error = (GraderWorkerError, f"the grader dispatcher failed: {err!r}")
        finally:
            with self._lock:
                workers, self.workers = self.workers, []
                batches, self._batches = self._batches, []
                self._thread, self._started = None, False
                if self._closing:
                    for fd in (self._wake_r, self._wake_w):
                        os.close(fd)
                    self._wake_r = self._wake_w = -1
            for batch in batches:
                batch.fail(*error)
            stop_workers(workers)

    def _step(self) -> bool:
        with self._lock:
            if self._closing:
                return False
            now = time.monotonic()
            self._assign(now)
            self._top_up()
            timers = self._grow_and_shrink(now)
            self._finish_starts()
            active = [w for w in self.workers if not w.ready or w.job is not None]
        timers += [w.deadline for w in active]
        timeout = max(0.0, min(timers) - now) if timers else None
        ready = wait([w.rx for w in active] + [self._wake_r], timeout)
        with self._lock:
            if self._wake_r in ready:
                self._drain_wake()
            now = time.monotonic()
            for w in active:
                if w.rx in ready:
                    self._receive(w, now)
                elif now >= w.deadline:
                    self._expire(w, now)
        return True

    def _drain_wake(self) -> None:
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _pick(self, worker: _Worker, replacing: bool) -> _Batch | None:
        """The batch ``worker`` serves next: fewest in flight, then the one it served last, then round robin."""
        best, best_key = None, None
        for batch in self._batches:
            if batch.queue and not (worker.extra and (batch.in_flight or (batch.lost and replacing))):
                key = (batch.in_flight, batch is not worker.last, batch.served)
                if best_key is None or key < best_key:
                    best, best_key = batch, key
        return best

    def _replacing(self) -> bool:
        return any(not w.ready and not w.extra for w in self.workers)

    def _assign(self, now: float) -> None:
        replacing = self._replacing()
        for w in list(self.workers):
            if not w.ready or w.job is not None:
                continue
            batch = self._pick(w, replacing)
            if batch is None:
                continue
            j = batch.queue.popleft()
            try:
                w.tx.send(batch.tasks[j])
            except (OSError, ValueError):  # died while idle: not this task's fault
                batch.queue.appendleft(j)
                self._remove(w)
                continue
            w.job, w.batch, w.last, w.deadline = j, batch, batch, now + batch.timeout
            batch.in_flight += 1
            batch.served = next(self._stamp)
            batch.starved_since, batch.lost = None, False

    def _spawn(self, extra: bool = False) -> None:
        self._started = True
        try:
            self.workers.append(_Worker(self.memory_mb, self.start_timeout, extra))
        except OSError as err:
            self._fail_all(GraderWorkerError, f"cannot start a grader worker ({sys.executable} {WORKER_SCRIPT}): {err}")

    def _top_up(self) -> None:
        """Keep ``num_workers`` workers once needed."""
        while (self._batches or self._started) and sum(not w.extra for w in self.workers) < self.num_workers:
            self._spawn()

    def _grow_and_shrink(self, now: float) -> list[float]:
        """Start extras for batches starved past ``grace``; stop extras idle past ``linger`` but ``reserve`` of
        them; returns when this is next due."""
        timers, due, lost = [], 0, 0
        replacing = self._replacing()
        for batch in self._batches:
            if batch.queue and batch.in_flight == 0 and batch.starved_since is not None:
                if batch.lost and replacing:
                    lost += 1
                elif now - batch.starved_since >= self.grace:
                    due += 1
                else:
                    timers.append(batch.starved_since + self.grace)
        coming = max(0, sum(not w.ready for w in self.workers) - lost)  # starting, not claimed by a lost batch
        extras = [w for w in self.workers if w.extra]
        if not extras and self.reserve and sum(not b.want_ready for b in self._batches) > 1:
            due = max(due, coming + 1)  # calls overlap for the first time: start the reserve now
        for _ in range(min(due - coming, self.max_extra - len(extras))):
            self._spawn(extra=True)
        for w in [w for w in extras if w.ready and w.job is None]:
            if len(extras) <= self.reserve:
                break
            if now - w.idle_since >= self.linger:
                extras.remove(w)
                self.workers.remove(w)
                stop_workers([w])
            else:
                timers.append(w.idle_since + self.linger)
        return timers

    def _finish_starts(self) -> None:
        if sum(w.ready and not w.extra for w in self.workers) >= self.num_workers:
            for batch in [b for b in self._batches if b.want_ready]:
                self._batches.remove(batch)
                batch.done.set()

    def _receive(self, w: _Worker, now: float) -> None:
        try:
            msg = w.rx.recv()
        except (EOFError, OSError):
            if not w.ready:
                self._remove(w)
                self._start_failures += 1
                if self._start_failures > 2 * self.num_workers:
                    self._start_failures = 0
                    self._fail_all(GraderWorkerError, f"grader workers keep dying at start-up ({sys.executable} "
                                   f"{WORKER_SCRIPT}); is math-verify installed? see the workers' stderr above")
                return
            if w.job is not None:
                log.warning("grader worker crashed on answer %r", w.batch.tasks[w.job][0][:200])  # type: ignore
                self.stats["crashes"] += 1
                w.batch.lost = not w.extra  # type: ignore[union-attr]
                self._complete(w, (False, "unparsable", "crash"), now)
            self._remove(w)
            return
        if not w.ready:
            w.ready, w.idle_since, self._start_failures = True, now, 0
        elif w.job is not None:
            ok, reason = msg
            self.stats["verified"] += 1
            self._complete(w, (bool(ok), str(reason), "math_verify"), now)

    def _expire(self, w: _Worker, now: float) -> None:
        if not w.ready:
            self._remove(w)
            self._fail_all(GraderWorkerError, f"a grader worker did not start within {self.start_timeout:.0f} s")
            return
        batch = w.batch
        assert batch is not None and w.job is not None
        log.info("grader timeout (%.1f s) on answer %r", batch.timeout, batch.tasks[w.job][0][:200])
        self.stats["timeouts"] += 1
        batch.lost = not w.extra
        self._complete(w, (False, "timeout", "timeout"), now)
        self._remove(w)

    def _complete(self, w: _Worker, result: Result, now: float) -> None:
        batch = w.batch
        assert batch is not None and w.job is not None
        batch.results[w.job] = result
        batch.in_flight -= 1
        batch.left -= 1
        w.job, w.batch, w.idle_since = None, None, now
        if batch.in_flight == 0 and batch.queue:
            batch.starved_since = now
        if batch.left == 0 and batch in self._batches:
            self._batches.remove(batch)
            batch.done.set()

    def _remove(self, w: _Worker) -> None:
        w.kill()
        self.workers.remove(w)

    def _fail_all(self, kind: type[BaseException], message: str) -> None:
        self._started = False  # no retries until the next call
        for batch in self._batches:
            batch.fail(kind, message)
        self._batches.clear()
