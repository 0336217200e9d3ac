"""Grader suite: answers/s of alignrl's grader pool (1 and 2 worker processes, cold and warm cache) against
math-verify called directly (``verify(parse(gold), parse(output))`` in one process, per answer, no cache).

Cold: a fresh pool (started before the clock) grades every answer once; warm: the same pool grades them again
(answers now in its cache). Each repeat measures every configuration and the peer once, alternating.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignrl.bench.report import entry

GRADER_DEV = Path("grader-dev") / "math_test_labelled.jsonl"


class BenchError(ValueError):
    """Bad input to ``alignrl bench`` (printed as one line, exit status 2)."""


def load_pairs(path: Path, limit: int | None = None) -> list[tuple[str, str]]:
    """``(output, gold)`` pairs of a grader-dev JSONL file; a bad row names the file and the line."""
    if not path.is_file():
        raise BenchError(f"{path}: grader data not found (pass --data-root, the folder holding {GRADER_DEV})")
    pairs = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            pairs.append((str(row["output"]), str(row["gold"])))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise BenchError(f"{path}: line {number}: expected a JSON object with 'output' and 'gold' "
                             f"({type(err).__name__}: {err})") from None
        if limit is not None and len(pairs) >= limit:
            break
    if not pairs:
        raise BenchError(f"{path}: no rows")
    return pairs


def math_verify_direct(pairs: list[tuple[str, str]]) -> float:
    """Seconds for math-verify's own ``parse``/``verify`` over every pair, in this process."""
    import logging

    from math_verify import parse, verify

    logging.getLogger("math_verify").setLevel(logging.ERROR)
    start = time.perf_counter()
    for output, gold in pairs:
        try:
            verify(parse(gold), parse(output))
        except Exception:  # noqa: BLE001 - counted like a wrong answer, as a caller of the library would
            pass
    return time.perf_counter() - start


def pool_pass(pairs: list[tuple[str, str]], workers: int) -> tuple[float, float]:
    """Seconds of a cold pass (fresh pool, started before timing) and of a warm pass (same pool again)."""
    from alignrl.grading import GraderPool

    with GraderPool(num_workers=workers) as pool:
        pool.start()
        start = time.perf_counter()
        pool.grade_many(pairs)
        cold = time.perf_counter() - start
        start = time.perf_counter()
        pool.grade_many(pairs)
        warm = time.perf_counter() - start
    return cold, warm


def run_grader_suite(data_root: Path, repeats: int, device: str, say: Callable[[str], None],
                     workers: tuple[int, ...] = (1, 2), limit: int | None = None) -> list[dict[str, Any]]:
    """Entries ``grader/workers=W/{cold,warm}`` in answers/s; the peer is math-verify direct."""
    from importlib.metadata import version

    path = data_root / GRADER_DEV
    pairs = load_pairs(path, limit)
    n = len(pairs)
    ours: dict[str, list[float]] = {f"workers={w}/{k}": [] for w in workers for k in ("cold", "warm")}
    peer: list[float] = []
    for r in range(repeats):
        peer.append(n / math_verify_direct(pairs))
        for w in workers:
            cold, warm = pool_pass(pairs, w)
            ours[f"workers={w}/cold"].append(n / cold)
            ours[f"workers={w}/warm"].append(n / warm)
        say(f"grader repeat {r + 1}/{repeats}: math-verify direct {peer[-1]:,.0f} answers/s; "
            + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in ours.items()))
    versions = {"math-verify": version("math-verify")}
    settings = {"data": str(path), "answers": n, "repeats": repeats}
    return [entry(f"grader/{key}", values, peer, "answers/s", "higher", {**settings, "workers": key}, versions,
                  device, note="peer: math-verify parse+verify in one process")
            for key, values in ours.items()]
