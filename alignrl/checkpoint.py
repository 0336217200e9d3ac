"""Checkpoints: every trainable model, the tokenizer, RNG, sampler and reward state, written atomically.

Layout of ``checkpoint-<step>/``: the policy is a Hugging Face model folder at the top (so the checkpoint loads
with ``from_pretrained`` as it is) with its ``optimizer.pt`` and ``scheduler.pt``; each auxiliary model has the
same in its own sub-folder ``<name>/``; ``state_<rank>.pt`` holds each rank's RNG, sampler and reward state;
``trainer_state.json`` is written last and marks the checkpoint complete.

Writes are atomic: everything goes into a hidden temporary folder that is renamed into place only when complete,
so a kill mid-save leaves the previous checkpoint intact. Re-saving an existing step first moves the old copy
aside (restored on the next listing if a kill lands between the two renames), so there is never a moment
without a complete copy. Only the last ``keep`` checkpoints are kept.
"""

from __future__ import annotations

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

from alignrl.learner.trainable import POLICY, TrainableModel

CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")
STATE_FILE = "trainer_state.json"


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
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save({"rng": rng_state(), **rank_state}, tmp / f"state_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        for name, model in models.items():
            model.save(tmp if name == POLICY else tmp / name, tokenizer if name == POLICY else None)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / STATE_FILE).write_text(json.dumps({**trainer_state, "step": step, "models": sorted(models)},
                                                 indent=2))
        _fsync_tree(tmp)
        aside = run_dir / f".old-checkpoint-{step:06d}"
        if final.exists():
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(final, aside)
        os.replace(tmp, final)
        _fsync(run_dir)
        shutil.rmtree(aside, ignore_errors=True)
        for old in list_checkpoints(run_dir)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        _fsync(run_dir)
    accelerator.wait_for_everyone()
    return final


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
