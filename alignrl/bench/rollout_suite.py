"""Rollout and sync suites: the ``vllm`` engine against the ``hf`` engine (generated tokens/s at several batch
sizes on SmolLM2-135M-Instruct) and seconds per weight push against model size.

Both reuse the functions of ``benchmarks/bench_rollout.py`` (model conversion, generation and push loops), loaded
from the checkout; they run only where vLLM is installed and the ``vllm`` engine is registered, and otherwise
return one entry per suite saying ``skipped: vLLM not installed``.
"""

from __future__ import annotations

import importlib.util
import statistics
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from alignrl.bench.report import entry, skipped

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "benchmarks" / "bench_rollout.py"


def vllm_available() -> str | None:
    """None when the ``vllm`` engine can run here, else why not."""
    if importlib.util.find_spec("vllm") is None:
        return "vLLM not installed"
    from alignrl.rollout import registered_engines

    if "vllm" not in registered_engines():
        return "the vllm engine is not registered"
    if not SCRIPT.is_file():
        return f"{SCRIPT} not found (needed for its generation and push loops)"
    return None


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("alignrl_bench_rollout_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _versions() -> dict[str, Any]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("vllm", "torch", "transformers"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def run_rollout_suite(cache: Path, batches: tuple[int, ...], max_new_tokens: int, repeats: int, device: str,
                      say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Entries ``rollout/batch=B/tokens_per_s``: ours = vllm in process, peer = hf, medians over repeats."""
    reason = vllm_available()
    if reason:
        return [skipped("rollout/tokens_per_s", reason, device, _versions())]
    script = _script()
    cache.mkdir(parents=True, exist_ok=True)
    folder = script.smollm2(cache)
    rows: list[dict[str, Any]] = []
    for r in range(repeats):
        rows += script.generation_rows(folder, list(batches), max_new_tokens)
        say(f"rollout repeat {r + 1}/{repeats} done")
    settings = {"model": "SmolLM2-135M-Instruct", "max_new_tokens": max_new_tokens, "temperature": 1.0,
                "repeats": repeats}
    by = lambda label, b: [x["tokens_per_s"] for x in rows if x["engine"] == label and x["batch"] == b]  # noqa: E731
    return [entry(f"rollout/batch={b}/tokens_per_s", by("vllm in process", b), by("hf", b), "tokens/s", "higher",
                  {**settings, "batch": b, "vllm processes tokens/s": by("vllm processes", b)}, _versions(), device,
                  note="ours: vllm engine in process; peer: hf engine")
            for b in batches]


def run_sync_suite(cache: Path, pushes: int, large: bool, device: str,
                   say: Callable[[str], None]) -> list[dict[str, Any]]:
    """Entries ``sync/MODEL/push_s``: ours = vllm in process, peer = the hf engine with its own copy."""
    reason = vllm_available()
    if reason:
        return [skipped("sync/push_s", reason, device, _versions())]
    script = _script()
    cache.mkdir(parents=True, exist_ok=True)
    rows = script.push_rows(cache, pushes, large)
    say(f"sync: {len(rows)} push measurements")
    entries = []
    for model in dict.fromkeys(x["model"] for x in rows):
        mine = [x for x in rows if x["model"] == model]
        get = lambda label: next((x["all_s"] for x in mine if x["engine"] == label), [])  # noqa: E731
        entries.append(entry(f"sync/{model}/push_s", get("vllm in process"), get("hf copy"), "s/push", "lower",
                             {"params_m": mine[0]["params_m"], "pushes": pushes, "bucket_mb": 512,
                              "vllm processes s": statistics.median(get("vllm processes")) if get("vllm processes")
                              else None}, _versions(), device, note="ours: vllm in process; peer: hf own copy"))
    return entries
