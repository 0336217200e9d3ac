"""Checkpoints: every trainable model, the tokenizer, RNG, sampler and reward state, written atomically.

Layout of ``checkpoint-<step>/``: the policy is a Hugging Face model folder at the top (so the checkpoint loads
with ``from_pretrained`` as it is) with its ``optimizer.pt`` and ``scheduler.pt``; each auxiliary model has the
same in its own sub-folder ``<name>/``. Under DeepSpeed the Hugging Face folder holds the consolidated weights
(gathered from every rank's ZeRO-3 shards) and, in place of ``optimizer.pt``, ``deepspeed/`` holds every rank's
shards of weights and optimiser state, which resume reads (with the same number of processes).
``state_<rank>.pt`` holds each rank's RNG, sampler and reward state; ``manifest.json`` (size and sha256 of every
file, DeepSpeed's shards included, see ``checkpoint_manifest.py``) is written after them, and
``trainer_state.json`` last: it marks the checkpoint complete.

Writes are atomic: everything goes into a hidden temporary folder that is renamed into place only when complete,
so a kill mid-save leaves the previous checkpoint intact. Re-saving an existing step first moves the old copy
aside (restored on the next listing if a kill lands between the two renames), so there is never a moment
without a complete copy. Only the last ``keep`` checkpoints up to the step being saved are kept (a newer one, left
damaged by an earlier run and skipped on resume, stays until this run re-saves its step). A write that fails
removes its temporary folder; on a full disk it raises :class:`CheckpointError` naming the folder and the space
a checkpoint needs. Resume takes the newest checkpoint whose manifest verifies (:func:`find_resumable`).
"""

from __future__ import annotations

import errno
import json
import os
import random
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator

from alignrl.checkpoint_manifest import STATE_FILE, checkpoint_problem, tree_size, write_manifest
from alignrl.learner.trainable import POLICY, TrainableModel

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
_DISK_FULL_HINTS = ("no space left", "os error 28", "disk quota", "os error 122")
_NEARLY_FULL = 16 << 20  # bytes free after a failed write below which the failure is taken for a full disk


class CheckpointError(RuntimeError):
    """A checkpoint could not be written (full disk); the message names the folder and the space needed."""


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints in ``run_dir``, oldest first (restoring a copy a killed re-save moved aside)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    for aside in run_dir.glob(".old-checkpoint-*"):
        final = run_dir / aside.name[len(".old-"):]
        if not final.exists() and (aside / STATE_FILE).is_file():
            os.replace(aside, final)
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT_RE.match(p.name)) and
             (p / STATE_FILE).is_file()]
    return [p for _, p in sorted(found)]


def find_resumable(run_dir: str | Path) -> tuple[Path | None, list[str]]:
    """The newest complete checkpoint that verifies (or None), and one line per newer one skipped, saying why."""
    skipped = []
    for checkpoint in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(checkpoint)
        if problem is None:
            return checkpoint, skipped
        skipped.append(f"{checkpoint.name}: {problem}")
    return None, skipped


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    for path in [*folder.rglob("*"), folder]:
        _fsync(path)  # files and folders (a folder's entries are only durable once the folder is synced)


def save_checkpoint(accelerator: Accelerator, run_dir: Path, step: int, models: dict[str, TrainableModel],
                    tokenizer: Any, trainer_state: dict[str, Any], rank_state: dict[str, Any], keep: int) -> Path:
    """Save atomically into ``run_dir/checkpoint-<step>``; every rank must call this (it holds barriers).
    ``rank_state`` (sampler, rewards...) is saved per rank next to that rank's RNG state."""
    final = run_dir / f"checkpoint-{step:06d}"
    tmp = run_dir / f".tmp-checkpoint-{step:06d}"
    try:
        _write(accelerator, run_dir, tmp, step, models, tokenizer, trainer_state, rank_state)
    except Exception as err:
        if accelerator.is_main_process and (full := _remove_partial(run_dir, tmp, step, err)) is not None:
            raise full from err
        raise
    if accelerator.is_main_process:
        aside = run_dir / f".old-checkpoint-{step:06d}"
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
        os.replace(tmp, final)
        _fsync(run_dir)
        shutil.rmtree(aside, ignore_errors=True)
        for old in [p for p in list_checkpoints(run_dir) if _step(p) <= step][:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        _fsync(run_dir)
    accelerator.wait_for_everyone()
    return final


def _write(accelerator: Accelerator, run_dir: Path, tmp: Path, step: int, models: dict[str, TrainableModel],
           tokenizer: Any, trainer_state: dict[str, Any], rank_state: dict[str, Any]) -> None:
    """Every file of the checkpoint into ``tmp``: rank states, models, then the manifest, then the trainer state."""
    if accelerator.is_main_process:
        for stale in run_dir.glob(".tmp-checkpoint-*"):  # partial saves of a killed run hold disk space
            shutil.rmtree(stale, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save({"rng": rng_state(), **rank_state}, tmp / f"state_{accelerator.process_index}.pt")
    for name, model in models.items():  # every rank: DeepSpeed writes each rank's shards, ZeRO-3 gathers
        model.save_shards(tmp if name == POLICY else tmp / name, accelerator.is_main_process)
    if accelerator.is_main_process:
        for name, model in models.items():
            model.save(tmp if name == POLICY else tmp / name, tokenizer if name == POLICY else None)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_manifest(tmp)
        (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "step": step, "models": sorted(models)},
                                                 indent=2))
        _fsync_tree(tmp)


def _remove_partial(run_dir: Path, tmp: Path, step: int, err: BaseException) -> CheckpointError | None:
    """Delete the partial folder of a failed write; a :class:`CheckpointError` when the disk was full."""
    written, free_at_failure = tree_size(tmp), _free_bytes(run_dir)
    shutil.rmtree(tmp, ignore_errors=True)
    if not (_says_disk_full(err) or free_at_failure < _NEARLY_FULL):
        return None
    previous = [p for p in list_checkpoints(run_dir) if _step(p) < step]
    need = tree_size(previous[-1]) if previous else written
    free = _free_bytes(run_dir)
    basis = f"the size of {previous[-1].name}" if previous else "written before the disk filled"
    then = f"{previous[-1].name} is intact; free space, then continue with --resume" if previous else \
        "free space, then start the run again"
    return CheckpointError(f"{run_dir}: disk full while writing checkpoint-{step:06d} (partial folder removed): a "
                           f"checkpoint needs about {_human(need)} ({basis}), {_human(free)} is free; {then}")


def _says_disk_full(err: BaseException | None) -> bool:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if any(hint in str(err).lower() for hint in _DISK_FULL_HINTS):
            return True
        err = err.__cause__ or err.__context__
    return False


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return 0


def _human(size: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _step(checkpoint: Path) -> int:
    return int(CHECKPOINT_RE.match(checkpoint.name).group(1))


def load_checkpoint(accelerator: Accelerator, checkpoint: Path, models: dict[str, TrainableModel]
                    ) -> tuple[dict[str, Any], dict[str, Any]]:
    """Restore every model and this rank's RNG; returns ``(trainer_state, rank_state)``."""
    trainer_state = json.loads((checkpoint / STATE_FILE).read_text())
    saved = set(trainer_state.get("models", [POLICY]))
    if saved != set(models):
        raise RuntimeError(f"{checkpoint}: holds models {sorted(saved)} but this run trains {sorted(models)}")
    for name, model in models.items():
        model.load(checkpoint if name == POLICY else checkpoint / name)
    state_file = checkpoint / f"state_{accelerator.process_index}.pt"
    if not state_file.is_file():
        raise RuntimeError(f"{checkpoint}: no state for process {accelerator.process_index}; resume with the "
                           f"same number of processes the run was started with")
    rank_state = torch.load(state_file, weights_only=False)
    set_rng_state(rank_state.pop("rng"))
    return trainer_state, rank_state
