"""Checkpoint manifests: the size and sha256 of every file, written last, checked before a checkpoint is trusted.

``manifest.json`` is written after every other file of a checkpoint and before ``trainer_state.json``::

    {"format": 1, "hash": "sha256", "files": {"model.safetensors": {"size": 4194392, "sha256": "..."}, ...}}

:func:`checkpoint_problem` says what is wrong with a checkpoint folder (``None`` when it is intact). A checkpoint
written before manifests existed is checked as far as it can be without one: the files a checkpoint always holds
are present, every safetensors file is as long as its header says, and every ``.pt`` file is a complete zip archive.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

MANIFEST_FILE = "manifest.json"
STATE_FILE = "trainer_state.json"
FORMAT = 1
_CHUNK = 1 << 22


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)  # hashlib releases the GIL on large chunks: files hash in parallel threads
    return digest.hexdigest()


def _hash_all(folder: Path, names: list[str]) -> list[str]:
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1, len(names)))) as pool:
        return list(pool.map(lambda name: file_sha256(folder / name), names))


def write_manifest(folder: Path) -> dict[str, Any]:
    """Hash every file under ``folder`` (except the manifest and ``trainer_state.json``) into ``manifest.json``."""
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                   if p.is_file() and p.name not in (MANIFEST_FILE, STATE_FILE))
    files = {name: {"size": (folder / name).stat().st_size, "sha256": digest}
             for name, digest in zip(names, _hash_all(folder, names))}
    manifest = {"format": FORMAT, "hash": "sha256", "files": files}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=1))
    return manifest


def tree_size(folder: Path) -> int:
    """Bytes in every file under ``folder`` (0 when it does not exist)."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else 0


def checkpoint_problem(folder: Path) -> str | None:
    """What is wrong with the checkpoint in ``folder`` in a few words (naming the file), or ``None`` if intact."""
    try:
        state = json.loads((folder / STATE_FILE).read_text())
    except (OSError, ValueError) as err:
        return f"{STATE_FILE} cannot be read ({type(err).__name__})"
    if not isinstance(state, dict) or "step" not in state:
        return f"{STATE_FILE} holds no step"
    if not (folder / MANIFEST_FILE).exists():
        return _legacy_problem(folder, state)
    try:
        manifest = json.loads((folder / MANIFEST_FILE).read_text())
        files = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        return f"{MANIFEST_FILE} cannot be read ({type(err).__name__})"
    for name, entry in files.items():
        path = folder / name
        if not path.is_file():
            return f"{name} is missing"
        size = path.stat().st_size
        if size != entry["size"]:
            return f"{name} has {size} bytes, the manifest says {entry['size']} (truncated or overwritten)"
    names = sorted(files)
    for name, digest in zip(names, _hash_all(folder, names)):
        if digest != files[name]["sha256"]:
            return f"{name} does not match its sha256 in {MANIFEST_FILE} (the file is corrupted)"
    return None


def _legacy_problem(folder: Path, state: dict[str, Any]) -> str | None:
    """Checks for a checkpoint without a manifest: expected files present, safetensors and zip files complete."""
    required = ["state_0.pt"]
    for name in state.get("models", ["policy"]):
        prefix = "" if name == "policy" else f"{name}/"
        required += [f"{prefix}optimizer.pt", f"{prefix}scheduler.pt"]
        if not any((folder / prefix).glob("*.safetensors")):
            return f"{prefix}model.safetensors is missing"
    for name in required:
        if not (folder / name).is_file():
            return f"{name} is missing"
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.suffix == ".safetensors" and (problem := _safetensors_problem(path)):
            return f"{name} {problem}"
        if path.suffix == ".pt" and not _complete_zip(path):
            return f"{name} is truncated or not a torch archive"
    return None


def _safetensors_problem(path: Path) -> str | None:
    size = path.stat().st_size
    try:
        with path.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(length)) if 8 + length <= size else None
    except (OSError, ValueError, struct.error):
        return "has an unreadable header"
    if not isinstance(header, dict):
        return "is truncated (shorter than its header)"
    ends = [entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__"]
    expected = 8 + length + max(ends, default=0)
    return None if size == expected else f"has {size} bytes, its header says {expected} (truncated)"


def _complete_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return bool(archive.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
