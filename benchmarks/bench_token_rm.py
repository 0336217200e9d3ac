"""OREAL's step time and peak memory with the co-trained token-level RM against the same run without it.

    python benchmarks/bench_token_rm.py --recipe recipes/oreal_harder.yaml --steps 12 --repeats 2 --out runs/bench_token_rm

Each measurement is a child process (so peak resident memory is its own): the recipe as given (token RM on, with
the tiny-model RM settings) and with ``algorithm.token_rm=false``, alternately. The actor freeze is set to 0 so
every step updates both models (the RM's cost is largest then). Prints median seconds per step (the sum of the
logged ``time/*`` phases over steps 3..N), peak RSS, and the ratio with/without.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

CHILD = """
import json, resource, sys
from alignrl.config import load_config
from alignrl.loop import train
run = train(load_config(sys.argv[1], sys.argv[2:]))
rows = [json.loads(l) for l in open(run / "metrics.jsonl")][2:]
step = sum(sum(v for k, v in r.items() if k.startswith("time/")) for r in rows) / len(rows)
print(json.dumps({"seconds_per_step": step, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def measure(recipe: str, out: Path, token_rm: bool, steps: int) -> dict:
    overrides = [f"trainer.max_steps={steps}", "trainer.save_steps=0", "eval.every_steps=0", "logging.progress_bar=false",
                 "algorithm.actor_freeze_steps=0", f"algorithm.token_rm={'true' if token_rm else 'false'}",
                 f"trainer.output_dir={out}", "trainer.overwrite_output_dir=true"]
    result = subprocess.run([sys.executable, "-c", CHILD, recipe, *overrides], capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default="recipes/oreal_harder.yaml")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", default="runs/bench_token_rm")
    args = parser.parse_args()
    out = Path(args.out)
    runs: dict[str, list[dict]] = {"with": [], "without": []}
    for round_ in range(1, args.repeats + 1):
        for side in ("without", "with"):
            figures = measure(args.recipe, out / f"{side}-r{round_}", side == "with", args.steps)
            runs[side].append(figures)
            print(f"{side} token RM, round {round_}: {figures['seconds_per_step']:.3f} s/step, "
                  f"peak RSS {figures['peak_rss_mb']:.0f} MB", flush=True)
    summary = {side: {"seconds_per_step": statistics.median(r["seconds_per_step"] for r in rs),
                      "peak_rss_mb": max(r["peak_rss_mb"] for r in rs)} for side, rs in runs.items()}
    ratio = summary["with"]["seconds_per_step"] / summary["without"]["seconds_per_step"]
    lines = ["| run | s/step (median) | peak RSS (MB) |", "|---|---|---|",
             *(f"| {side} token RM | {s['seconds_per_step']:.3f} | {s['peak_rss_mb']:.0f} |" for side, s in summary.items()),
             "", f"step-time ratio with/without: {ratio:.2f} (target <= 1.6)"]
    print("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_token_rm.json").write_text(json.dumps({"runs": runs, "summary": summary, "ratio": ratio,
                                                          "command": " ".join(sys.argv)}, indent=2))


if __name__ == "__main__":
    main()
