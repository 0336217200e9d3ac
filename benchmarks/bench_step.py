"""GRPO step speed of two alignrl source trees (a base commit and this checkout), measured alternately.

    python benchmarks/bench_step.py --model runs/qs0/bc --prompts runs/qs0/data/rl_prompts.jsonl \\
        --base-ref 650fafa --steps 15 --repeats 3 --out runs/bench_step

Each measurement is a fresh child process that imports ``alignrl`` from one tree (base: a git worktree of
``--base-ref`` under /tmp; head: this repository, uncommitted edits included), takes that tree's own
quickstart GRPO recipe (``QuickstartSettings().grpo``, so renamed config keys follow each tree), points it
at ``--model``/``--prompts`` with evaluation and intermediate checkpoints off, seed 0, and runs ``--steps``
steps of ``alignrl.loop.train``. Sides alternate (base, head, base, head, ...) so drift in machine load hits
both alike. OMP_NUM_THREADS is removed from the children's environment: torch uses its default thread count.

How to read it: "steps/s (time keys)" is (N-2) / the sum of time/generate + time/score + time/update
(+ time/sync where the tree logs it; 650fafa counts the weight push inside time/update) over steps 3..N
(2 warm-up steps skipped): the loop itself, without start-up. "wall steps/s" is N / the wall time of the
whole train() call (model load and the final checkpoint included). The ratio head/base of the medians is
the figure to check (target >= 0.9). The spread (min-max over repeats) and the 1-minute load average
printed per measurement show how busy the machine was: other processes competing for the cores slow every
phase many-fold, so compare only figures from one run, use more --repeats on a busy machine, and read a
ratio inside the spreads as no evidence of a change.
Output: a Markdown table on stdout and in OUT/bench_step.md; all raw figures in OUT/bench_step.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
KEYS = ["time/generate", "time/score", "time/update", "time/sync"]
MARK = "BENCH_STEP_RESULT "

CHILD = r"""
import copy, json, sys, time
args = json.loads(sys.argv[1])
import torch
import alignrl
from alignrl.config import load_config
from alignrl.loop import train
from alignrl.quickstart.run import QuickstartSettings

recipe = copy.deepcopy(QuickstartSettings().grpo)
recipe["model"] = {**recipe.get("model", {}), "path": args["model"]}
recipe["data"] = {"train": args["prompts"]}
recipe["eval"] = {**recipe.get("eval", {}), "every_steps": 0}
recipe["trainer"] = {**recipe["trainer"], "max_steps": args["steps"], "save_steps": 0,
                     "output_dir": args["output_dir"], "seed": 0}
recipe["logging"] = {**recipe.get("logging", {}), "progress_bar": False}
start = time.perf_counter()
run_dir = train(load_config(base=recipe))
wall = time.perf_counter() - start
records = [json.loads(l) for l in open(f"{run_dir}/metrics.jsonl") if l.strip()]
print(%r + json.dumps({"alignrl_file": alignrl.__file__, "torch_threads": torch.get_num_threads(),
                        "wall_s": wall, "records": records}), flush=True)
""" % MARK


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], check=True, capture_output=True, text=True).stdout.strip()


def base_worktree(ref: str) -> Path:
    """A detached worktree of ``ref`` under /tmp, created once and reused (checked to be at ``ref``)."""
    commit = git("rev-parse", "--verify", f"{ref}^{{commit}}")
    path = Path(f"/tmp/alignrl-base-{ref.replace('/', '_')}")
    if not path.exists():
        git("worktree", "add", "--detach", str(path), commit)
    at = subprocess.run(["git", "-C", str(path), "rev-parse", "HEAD"], check=True, capture_output=True,
                        text=True).stdout.strip()
    if at != commit:
        raise SystemExit(f"{path} is at {at}, not {ref} ({commit}); remove it (git worktree remove) and rerun")
    return path


def measure(side: str, root: Path, round_: int, args: argparse.Namespace) -> dict[str, Any]:
    """Run one child on the tree at ``root``; returns its figures."""
    out_dir = args.out / f"{side}-r{round_}"
    shutil.rmtree(out_dir, ignore_errors=True)
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["PYTHONPATH"] = str(root)
    child_args = {"model": str(args.model), "prompts": str(args.prompts), "steps": args.steps,
                  "output_dir": str(out_dir)}
    # cwd is --out, not a source tree: `python -c` puts the cwd first on sys.path, ahead of PYTHONPATH.
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps(child_args)], env=env, cwd=args.out,
                          capture_output=True, text=True)
    lines = [l for l in proc.stdout.splitlines() if l.startswith(MARK)]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{side} round {round_} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    result = json.loads(lines[-1][len(MARK):])
    if not Path(result["alignrl_file"]).resolve().is_relative_to(root.resolve()):
        raise SystemExit(f"{side}: alignrl imported from {result['alignrl_file']}, not from {root}")
    timed = [r for r in result.pop("records") if r["step"] > 2]
    step_s = [sum(r.get(k, 0.0) for k in KEYS) for r in timed]
    return {"side": side, "round": round_, **result, "steps_timed": len(timed), "load_avg_1m": os.getloadavg()[0],
            "steps_per_s": len(timed) / sum(step_s), "wall_steps_per_s": args.steps / result["wall_s"],
            "median_s": {k: statistics.median(r[k] for r in timed) if all(k in r for r in timed) else None
                         for k in KEYS}, "step_s": step_s}


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    rates = [r["steps_per_s"] for r in runs]
    keys = {k: [r["median_s"][k] for r in runs if r["median_s"][k] is not None] for k in KEYS}
    return {"steps_per_s": statistics.median(rates), "min": min(rates), "max": max(rates),
            "wall_steps_per_s": statistics.median(r["wall_steps_per_s"] for r in runs),
            "median_s": {k: statistics.median(v) if v else None for k, v in keys.items()}}


def table(summary: dict[str, dict[str, Any]]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    lines = ["| side | steps/s (time keys) | spread | wall steps/s | generate s | score s | update s | sync s |",
             "|---|---|---|---|---|---|---|---|"]
    for side, s in summary.items():
        lines.append(f"| {side} | {s['steps_per_s']:.3f} | {s['min']:.3f}-{s['max']:.3f} | "
                     f"{s['wall_steps_per_s']:.3f} | " + " | ".join(fmt(s["median_s"][k]) for k in KEYS) + " |")
    b, h = summary["base"], summary["head"]
    lines += ["", f"ratio head/base: {h['steps_per_s'] / b['steps_per_s']:.3f} (time keys), "
                  f"{h['wall_steps_per_s'] / b['wall_steps_per_s']:.3f} (wall); target >= 0.9"]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True, help="BC model folder (quickstart OUT/bc)")
    parser.add_argument("--prompts", type=Path, required=True, help="RL prompts (quickstart OUT/data/rl_prompts.jsonl)")
    parser.add_argument("--base-ref", required=True, help="git commit to compare this checkout against")
    parser.add_argument("--steps", type=int, default=15, help="GRPO steps per measurement (> 2; default 15)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds of base+head (default 3)")
    parser.add_argument("--out", type=Path, default=Path("runs/bench_step"))
    args = parser.parse_args()
    if args.steps < 3:
        parser.error("--steps must be > 2 (2 warm-up steps are skipped)")
    args.model, args.prompts, args.out = args.model.resolve(), args.prompts.resolve(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    trees = {"base": base_worktree(args.base_ref), "head": REPO}
    print(f"base {args.base_ref} at {trees['base']}; head {REPO}; {args.steps} steps x {args.repeats} rounds",
          flush=True)

    runs: list[dict[str, Any]] = []
    for round_ in range(1, args.repeats + 1):
        for side, root in trees.items():
            runs.append(measure(side, root, round_, args))
            r = runs[-1]
            print(f"{side} round {round_}: {r['steps_per_s']:.3f} steps/s (time keys), "
                  f"{r['wall_steps_per_s']:.3f} wall; load {r['load_avg_1m']:.1f}; "
                  f"alignrl from {Path(r['alignrl_file']).parent}", flush=True)

    summary = {side: summarize([r for r in runs if r["side"] == side]) for side in trees}
    text = table(summary)
    print("\n" + text, end="")
    (args.out / "bench_step.md").write_text(text)
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), "unknown")
    report = {"command": [sys.executable, *sys.argv], "base_ref": args.base_ref,
              "base_commit": git("rev-parse", f"{args.base_ref}^{{commit}}"), "head_commit": git("rev-parse", "HEAD"),
              "head_dirty": bool(git("status", "--porcelain")), "cpu": cpu, "cpu_count": os.cpu_count(),
              "torch_threads": sorted({r["torch_threads"] for r in runs}), "steps": args.steps,
              "repeats": args.repeats, "summary": summary, "runs": runs,
              "ratio_steps_per_s": summary["head"]["steps_per_s"] / summary["base"]["steps_per_s"],
              "ratio_wall_steps_per_s": summary["head"]["wall_steps_per_s"] / summary["base"]["wall_steps_per_s"]}
    (args.out / "bench_step.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
