"""Claim the run folder: never clobber a previous run unless asked; find the checkpoint to resume from.

A folder "holds a run" once it has a checkpoint or a logged step. A folder left by a failed start (only the files
a run writes before its first step: the resolved recipe, the reward description, logger set-up files, a partial
checkpoint) never blocks a rerun. The folder's writability is checked before anything is loaded.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Literal

from alignrl.checkpoint import find_resumable, list_checkpoints

Resume = bool | Literal["auto"]
# what a run writes before its first step: a folder holding only these (and empty logs) is a failed start
START_FILES = {"run_config.yaml", "rewards.json", "wandb_run_id.txt", "tensorboard", "wandb"}
LOG_FILES = {"metrics.jsonl", "completions.jsonl"}


class RunDirError(RuntimeError):
    """The output folder cannot be used as asked; the message says why and what to pass instead."""


def resolve_resume(path: str | Path, resume: Resume) -> bool:
    """``"auto"``: resume when the folder holds a complete checkpoint, start fresh otherwise."""
    return bool(list_checkpoints(path)) if resume == "auto" else bool(resume)


def holds_run(path: str | Path) -> bool:
    """True when the folder has anything but what a failed start leaves (see :data:`START_FILES`)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for entry in path.iterdir():
        if entry.name in START_FILES or entry.name.startswith(".tmp-checkpoint-"):
            continue
        if entry.name in LOG_FILES and entry.is_file() and entry.stat().st_size < 4096 and \
                not entry.read_bytes().strip():
            continue
        return True
    return False


def check_run_dir(path: str | Path, resume: bool, overwrite: bool) -> Path | None:
    """Validate the request (only a probe file is created and removed); returns the checkpoint to resume from.

    With ``resume``, damaged newer checkpoints are skipped with a warning naming what is wrong with each."""
    path = Path(path)
    check_writable(path)
    start_over = "pass trainer.overwrite_output_dir=true to start over (its contents will be deleted)"
    if resume:
        if not list_checkpoints(path):
            advice = start_over if holds_run(path) else "run the same command without --resume to start it"
            raise RunDirError(f"{path}: nothing to resume: the folder holds no complete checkpoint; {advice}")
        checkpoint, skipped = find_resumable(path)
        if checkpoint is None:
            older = f"; {len(skipped) - 1} older one(s) fail verification too" if len(skipped) > 1 else ""
            raise RunDirError(f"{path}: no intact checkpoint to resume from ({skipped[0]}{older}); {start_over}")
        for problem in skipped:
            _warn(f"{path}/{problem}; resuming from the newest intact checkpoint, {checkpoint.name}")
        return checkpoint
    if holds_run(path) and not overwrite:
        if list_checkpoints(path):
            raise RunDirError(f"{path}: the folder already holds a run; pass --resume to continue it, or "
                              f"{start_over}")
        raise RunDirError(f"{path}: the folder already holds a run or other files; {start_over}, or choose "
                          f"another output folder")
    return None


def check_writable(path: str | Path) -> None:
    """A RunDirError unless ``path`` is (or can be created as) a folder this process can write in."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunDirError(f"{path}: the output folder is a file, not a folder; choose another output folder")
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise RunDirError(f"{path}: cannot create the output folder: {existing} is a file, not a folder")
    try:
        handle, probe = tempfile.mkstemp(prefix=".alignrl-write-probe-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise RunDirError(f"{path}: cannot write in {existing} ({err.strerror or err}); choose a writable output "
                          f"folder") from err


def claim_run_dir(path: str | Path, resume: bool, overwrite: bool, is_main: bool) -> Path:
    """Create (or, with ``overwrite``, empty) the folder. Call only after every input has been validated."""
    path = Path(path)
    if is_main and not resume and overwrite and path.exists():
        shutil.rmtree(path)
    if is_main:
        path.mkdir(parents=True, exist_ok=True)
    return path


def _warn(message: str) -> None:
    if os.environ.get("RANK", "0") == "0":  # once per run, not once per process
        print(f"alignrl: warning: {message}", file=sys.stderr, flush=True)
