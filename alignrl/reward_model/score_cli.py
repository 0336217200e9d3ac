"""``alignrl score``: flags and the run. Imports stay light here; the heavy modules load inside :func:`run`.

    alignrl score --model DIR --data FILE --out DIR [--batch-size 16] [--max-length N]
        [--truncation-side left|right] [--group-by COL ...] [--length-buckets N ...] [--skip-bad-rows]
        [--device auto|cpu|cuda] [--dtype auto|float32|bfloat16|float16] [--split train] [--overwrite]

Exit codes: 0 done, 2 bad input, arguments or model.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--model", required=True, help="reward model folder (AutoModelForSequenceClassification, one output)")
    add("--data", required=True, help="preference pairs (chosen, rejected[, prompt, margin]) or responses "
                                      "(response[, prompt]): .jsonl/.json/.parquet/.csv file or hub dataset name")
    add("--out", required=True, help="output folder (must be new or empty unless --overwrite)")
    add("--split", default="train", help="split of a hub dataset or of a JSON file keyed by split (default train)")
    add("--batch-size", type=int, default=16, help="sequences per forward pass (default 16)")
    add("--max-length", type=int, default=None,
        help="tokens per input, longer ones are truncated and counted (default: the model's context)")
    add("--truncation-side", choices=("left", "right"), default="left",
        help="where a long input loses tokens: left keeps the end, which the reward head reads (default left)")
    add("--group-by", nargs="+", default=[], metavar="COL",
        help="report accuracy (or mean score) per value of these columns; length_bucket is always reported")
    add("--length-buckets", nargs="+", type=int, default=None, metavar="TOKENS",
        help="length-bucket edges in tokens, e.g. 128 256 512 (default: the quartiles of the data)")
    add("--skip-bad-rows", action="store_true", help="skip malformed rows and report them instead of stopping")
    add("--device", default="auto", help="auto (a GPU when there is one), cpu, cuda, cuda:1 (default auto)")
    add("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
        help="model weights (default auto: bfloat16 on GPUs that support it, float32 elsewhere)")
    add("--overwrite", action="store_true", help="replace the results in a folder that holds some")
    add("--no-progress", dest="progress", action="store_false", help="no progress bar")


def _headline(summary: dict) -> str:
    if summary["mode"] == "pairs":
        lo, hi = summary["accuracy_ci95"]
        return (f"scored {summary['n']} pairs in {summary['seconds']:.1f} s "
                f"({summary['pairs_per_second'] or 0:.1f} pairs/s): accuracy {summary['accuracy']:.1%} "
                f"(95% CI {lo:.1%}-{hi:.1%}), mean margin {summary['mean_margin']:.3f}, ECE "
                f"{summary['ece']:.3f}; ties {summary['counts']['ties']}, truncated "
                f"{summary['counts']['truncated_chosen'] + summary['counts']['truncated_rejected']}, "
                f"bad rows skipped {summary['counts']['bad_rows_skipped']}")
    return (f"scored {summary['n']} responses in {summary['seconds']:.1f} s: mean {summary['mean']:.3f}, "
            f"std {summary['std']:.3f}; truncated {summary['counts']['truncated']}, empty "
            f"{summary['counts']['empty']}, bad rows skipped {summary['counts']['bad_rows_skipped']}")


def run(args: argparse.Namespace) -> int:
    """Run ``alignrl score``; user errors print one line and return 2."""
    from alignrl.data import DataError
    from alignrl.learner.models import ModelLoadError
    from alignrl.reward_model.score import ScoreError, ScoreSettings, run_score

    settings = ScoreSettings(model=args.model, data=args.data, out=args.out, batch_size=args.batch_size,
                             max_length=args.max_length, truncation_side=args.truncation_side,
                             group_by=list(args.group_by), length_buckets=args.length_buckets,
                             skip_bad_rows=args.skip_bad_rows, device=args.device, dtype=args.dtype,
                             split=args.split, overwrite=args.overwrite, progress=args.progress)
    try:
        summary = run_score(settings)
    except (DataError, ModelLoadError, ScoreError, FileNotFoundError) as err:
        print(f"alignrl score: error: {err}", file=sys.stderr)
        return 2
    print(_headline(summary), file=sys.stderr)
    print(f"results: {args.out}/summary.md", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alignrl score", description="Score preference pairs or responses "
                                                                       "with a reward model.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
