"""Where the tests find MATH-500: ``../shared/data/math500/test.jsonl`` beside the checkout, else a copy fetched
once from the hub (HuggingFaceH4/MATH-500) with ``datasets`` into ``$ALIGNRL_CACHE/math500/test.jsonl``, else
nothing, with the reason (the tests that need it skip and print it)."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from urllib.parse import urlparse

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / ".." / "shared" / "data" / "math500" / "test.jsonl"
HUB_DATASET = "HuggingFaceH4/MATH-500"
HOW_TO_GET = (f"put the project's shared/ folder beside the checkout ({SHARED.resolve()}), or run the tests once "
              f"with access to the Hugging Face hub to cache {HUB_DATASET}")


def cache_file() -> Path:
    return Path(os.environ.get("ALIGNRL_CACHE", Path.home() / ".cache" / "alignrl")) / "math500" / "test.jsonl"


def hub_reachable(timeout: float = 3.0) -> bool:
    """A quick TCP check of the hub endpoint (``datasets`` itself retries for ~30 s before giving up)."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes") or \
            os.environ.get("HF_DATASETS_OFFLINE", "").lower() in ("1", "true", "yes"):
        return False
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    try:
        socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)),
                                 timeout=timeout).close()
        return True
    except OSError:
        return False


def fetch(target: Path) -> Path:
    """Download the test split with ``datasets`` and write it as JSON lines (atomically) to ``target``."""
    import datasets

    rows = datasets.load_dataset(HUB_DATASET, split="test")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text("".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
    os.replace(tmp, target)
    return target


def find_math500(shared: Path = SHARED) -> tuple[Path | None, str]:
    """The MATH-500 file to test with and where it came from, or None and why there is none."""
    if shared.is_file():
        return shared, "shared"
    cached = cache_file()
    if cached.is_file():
        return cached, "cache"
    if not hub_reachable():
        return None, f"MATH-500 not found and the hub is not reachable: {HOW_TO_GET}"
    try:
        return fetch(cached), "hub"
    except Exception as err:  # noqa: BLE001 - any hub or datasets failure means "skip, and say why"
        return None, f"MATH-500 not found and fetching {HUB_DATASET} failed ({type(err).__name__}: {err}): " \
                     f"{HOW_TO_GET}"
