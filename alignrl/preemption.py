"""Preemption: on SIGTERM or SIGUSR1, finish the current step, save a checkpoint and exit with status 75.

A job scheduler preempting a run sends SIGTERM (Slurm: ``scancel``, preemption, or ``--signal=USR1@120`` for an
early warning; Kubernetes: pod deletion). ``alignrl train`` then completes the step it is in, writes a checkpoint,
and exits with :data:`PREEMPTED_EXIT` = 75 (``EX_TEMPFAIL`` in ``sysexits.h``: "temporary failure, retry"). A job
script can requeue on 75 and rerun the same command with ``--resume auto`` (resume when a complete checkpoint
exists, start fresh otherwise). A signal during the last step ends the run normally (status 0).

With several processes, each rank's flag is all-reduced once per step, so every rank stops after the same step
even when the signal reaches only some of them. Each rank exits 75, but ``accelerate launch`` (torchrun) reports
failed workers with its own status 1: under a launcher, requeue on any non-zero status and rely on ``--resume
auto``. The step must end within the scheduler's grace period (Slurm's ``KillWait``, 30 s by default; use
``--signal=USR1@120`` to get the warning earlier).
"""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from types import FrameType, TracebackType

import torch
from accelerate import Accelerator

PREEMPTED_EXIT = 75
SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class Preempted(SystemExit):
    """The run stopped early on a signal after saving ``checkpoint``. A ``SystemExit`` with code
    :data:`PREEMPTED_EXIT`, so a command that trains in-process (sweep, compare) also exits with 75 when uncaught."""

    def __init__(self, signal_name: str, step: int, checkpoint: Path):
        super().__init__(PREEMPTED_EXIT)
        self.signal_name, self.step, self.checkpoint = signal_name, step, checkpoint
        self.message = (f"stopped on {signal_name} after step {step}; saved {checkpoint}; continue with --resume "
                        f"(or --resume auto)")

    def __str__(self) -> str:
        return self.message


class PreemptionWatch:
    """While active (a context manager), SIGTERM and SIGUSR1 only set a flag that the loop checks between steps."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> PreemptionWatch:
        for sig in SIGNALS:
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a test calling train() in a thread): leave defaults
                break
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous.clear()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signal.Signals(signum).name
            print(f"alignrl: {self.received} received: finishing this step, then saving a checkpoint",
                  file=sys.stderr, flush=True)

    def should_stop(self, accelerator: Accelerator) -> bool:
        """Whether any rank received a signal (a collective: every rank must call it after every step)."""
        if accelerator.num_processes == 1:
            return self.received is not None
        flag = torch.tensor([float(self.received is not None)], device=accelerator.device)
        return bool(accelerator.reduce(flag, reduction="sum").item() > 0)
