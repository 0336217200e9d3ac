"""Claim the run folder: never clobber a previous run unless asked; find the checkpoint to resume from."""

from __future__ import annotations

import shutil
from pathlib import Path

from alignrl.checkpoint import list_checkpoints


class RunDirError(RuntimeError):
    """The output folder cannot be used as asked; the message says why and what to pass instead."""


def check_run_dir(path: str | Path, resume: bool, overwrite: bool) -> Path | None:
    """Validate the request without touching anything; returns the checkpoint to resume from (or None)."""
    path = Path(path)
    if resume:
        checkpoints = list_checkpoints(path)
        if not checkpoints:
            raise RunDirError(f"{path}: --resume was given but the folder holds no complete checkpoint")
        return checkpoints[-1]
    if path.exists() and any(path.iterdir()) and not overwrite:
        raise RunDirError(f"{path}: the folder already holds a run; pass --resume to continue it, or "
                          f"trainer.overwrite_output_dir=true to start over (its contents will be deleted)")
    return None


def claim_run_dir(path: str | Path, resume: bool, overwrite: bool, is_main: bool) -> Path:
    """Create (or, with ``overwrite``, empty) the folder. Call only after every input has been validated."""
    path = Path(path)
    if is_main and not resume and overwrite and path.exists():
        shutil.rmtree(path)
    if is_main:
        path.mkdir(parents=True, exist_ok=True)
    return path
