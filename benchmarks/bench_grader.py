"""Grading throughput on the grader-dev set (answers/s): cold (empty cache) and warm (cached), 2 workers.

    python benchmarks/bench_grader.py [--data ../shared/data/grader-dev/math_test_labelled.jsonl] [--workers 2]

Prints figures only (no assertions): the machine is shared, so compare numbers from the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections import Counter
from pathlib import Path

from alignrl.grading import GraderPool, prepare

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared"
DEFAULT_DATA = SHARED / "data" / "grader-dev" / "math_test_labelled.jsonl"


def _cpu_seconds(pids: list[int]) -> float:
    """User+system CPU time of live processes (Linux /proc; 0 elsewhere)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            return 0.0
    return total / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="cold rounds, each with a fresh pool (default 3)")
    args = parser.parse_args()

    with args.data.open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line in handle if line.strip()]
    pairs = [(r["output"], r["gold"]) for r in rows]
    n = len(pairs)
    print(f"{n} answers from {args.data.name}; {args.workers} workers; {os.cpu_count()} CPUs; "
          f"load average {os.getloadavg()[0]:.1f} (the machine is shared: figures vary with it)")

    start = time.perf_counter()
    items = [prepare(o, g) for o, g in pairs]
    in_process = time.perf_counter() - start
    methods = Counter(getattr(i, "method", "math_verify") for i in items)
    print(f"in-process part (extraction + fast paths): {n / in_process:,.0f} answers/s; decided: "
          + ", ".join(f"{k} {v}" for k, v in sorted(methods.items())))

    for round_ in range(args.rounds):
        with GraderPool(num_workers=args.workers) as pool:
            start = time.perf_counter()
            pool.start()
            started = time.perf_counter() - start
            pids = pool.worker_pids()
            cpu0, worker_cpu0 = time.process_time(), _cpu_seconds(pids)
            start = time.perf_counter()
            verdicts = pool.grade_many(pairs)
            cold = time.perf_counter() - start
            parent_cpu, worker_cpu = time.process_time() - cpu0, _cpu_seconds(pids) - worker_cpu0
            start = time.perf_counter()
            pool.grade_many(pairs)
            warm = time.perf_counter() - start
            stats = dict(pool.stats)
        # what the cold pass would take with a core per process: the parent's work, or the workers' shared out
        ideal = max(parent_cpu, worker_cpu / args.workers) if worker_cpu else 0.0
        print(f"round {round_ + 1}: workers ready in {started:.2f} s | cold {n / cold:,.0f} answers/s ({cold:.2f} s; "
              f"{stats['verified']} math-verify calls, {stats['timeouts']} timeouts; CPU: parent {parent_cpu:.2f} s, "
              f"workers {worker_cpu:.2f} s" + (f" -> {n / ideal:,.0f} answers/s on idle cores" if ideal else "")
              + f") | warm {n / warm:,.0f} answers/s ({warm:.2f} s) | cold including start-up "
              f"{n / (cold + started):,.0f} answers/s | {sum(v.correct for v in verdicts)} correct")

if __name__ == "__main__":
    main()
