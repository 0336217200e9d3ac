"""``alignrl bench --out DIR [--suite train,rollout,grader,sync] [--repeats N]``: speed side by side with the peers.

Suites: ``train`` (alignrl's GRPO step against TRL's GRPOTrainer, see :mod:`alignrl.bench.train_suite`),
``grader`` (the grader pool against math-verify direct), ``rollout`` and ``sync`` (the vllm engine against the hf
engine; skipped where vLLM is not installed). Writes ``DIR/bench.json``, ``DIR/bench.md``, ``DIR/bench_SUITE.png``
and ``DIR/train_scaling.png``, and prints the table. Absolute figures move with the machine's load: read the
ratios, which come from runs of both sides alternated in the same process tree.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from alignrl.bench.grader_suite import BenchError

SUITES = ("train", "grader", "rollout", "sync")
REPO = Path(__file__).resolve().parents[2]


def _ints(text: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _suites(text: str) -> tuple[str, ...]:
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    unknown = [s for s in names if s not in SUITES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown suite(s) {unknown or '(none)'}; known: {','.join(SUITES)}")
    return names


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder (bench.json, bench.md, PNGs)")
    parser.add_argument("--suite", type=_suites, default=SUITES, help=f"comma-separated, default {','.join(SUITES)}")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of each side (default 3)")
    train = parser.add_argument_group("train suite")
    train.add_argument("--prompts-per-step", type=int, default=32, help="prompts per GRPO step (default 32)")
    train.add_argument("--n", type=int, default=8, help="samples per prompt (default 8)")
    train.add_argument("--max-new-tokens", type=int, default=16, help="completion length (default 16)")
    train.add_argument("--warmup", type=int, default=2, help="untimed steps per child (default 2)")
    train.add_argument("--steps", type=int, default=5, help="timed steps per child (default 5)")
    train.add_argument("--scaling-lengths", type=_ints, default=(8, 16, 32),
                       help="completion lengths of the scaling curve (default 8,16,32; '' = no curve)")
    train.add_argument("--scaling-n", type=_ints, default=(4, 8, 16),
                       help="samples per prompt of the scaling curve (default 4,8,16; '' = no curve)")
    train.add_argument("--scaling-steps", type=int, default=2, help="timed steps per scaling point (default 2)")
    grader = parser.add_argument_group("grader suite")
    grader.add_argument("--data-root", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding grader-dev/math_test_labelled.jsonl (default ../shared/data)")
    grader.add_argument("--grader-limit", type=int, default=None, help="grade only the first N answers")
    rollout = parser.add_argument_group("rollout and sync suites (vLLM)")
    rollout.add_argument("--batches", type=_ints, default=(8, 64, 256), help="default 8,64,256")
    rollout.add_argument("--rollout-tokens", type=int, default=32, help="max new tokens per sample (default 32)")
    rollout.add_argument("--pushes", type=int, default=3, help="weight pushes per model (default 3)")
    rollout.add_argument("--cache", type=Path, default=Path("/tmp/alignrl-bench"), help="converted SmolLM2 folder")


def _say(line: str) -> None:
    print(f"bench: {line}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except BenchError as err:
        print(f"alignrl bench: error: {err}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace) -> int:
    from alignrl.bench.report import device_name, table, write_report

    for name in ("repeats", "prompts_per_step", "n", "max_new_tokens", "steps", "warmup", "scaling_steps",
                 "pushes", "rollout_tokens"):
        if getattr(args, name) < 1:
            raise BenchError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    if args.out.exists() and not args.out.is_dir():
        raise BenchError(f"{args.out}: exists and is not a folder")
    args.out.mkdir(parents=True, exist_ok=True)
    device = device_name()
    start = time.perf_counter()
    entries: list[dict[str, Any]] = []
    extra: list[str] = []
    _say(f"suites {','.join(args.suite)}, {args.repeats} repeats, {device}, load {os.getloadavg()[0]:.1f}")
    if "train" in args.suite:
        import torch

        from alignrl.bench.train_suite import TrainSettings, run_train_suite

        settings = TrainSettings(args.prompts_per_step, args.n, args.max_new_tokens, warmup=args.warmup,
                                 steps=args.steps, scaling_lengths=args.scaling_lengths, scaling_n=args.scaling_n,
                                 scaling_steps=args.scaling_steps)
        precision = "bf16" if torch.cuda.is_available() else "no"
        found, md = run_train_suite(args.out, settings, args.repeats, device, precision, _say)
        entries += found
        extra += md
    if "grader" in args.suite:
        from alignrl.bench.grader_suite import run_grader_suite

        entries += run_grader_suite(args.data_root, args.repeats, device, _say, limit=args.grader_limit)
    if "rollout" in args.suite:
        from alignrl.bench.rollout_suite import run_rollout_suite

        entries += run_rollout_suite(args.cache, args.batches, args.rollout_tokens, args.repeats, device, _say)
    if "sync" in args.suite:
        from alignrl.bench.rollout_suite import run_sync_suite

        entries += run_sync_suite(args.cache, args.pushes, True, device, _say)
    header = (f"# alignrl bench\n\nSuites {','.join(args.suite)} on {device}; "
              f"{time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.1f} at the end. Ratio = "
              f"ours / peer (medians over {args.repeats} repeats; spread = min-max).")
    write_report(args.out, entries, header, extra)
    print(table(entries), end="")
    _say(f"wrote {args.out / 'bench.json'} and {args.out / 'bench.md'}")
    return 0
