"""``alignrl grade``: grade JSON lines of model outputs against gold answers.

Input: JSON lines with an output and a gold field (files, or stdin when none). Output: one JSON object per
input line, in order, with ``correct``, ``extracted``, ``reason`` and ``method`` (plus fields named by
``--keep``), to stdout or ``--output`` (written whole or not at all). Progress and the summary go to stderr.
Exit codes: 0 done, 2 bad input or arguments.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from typing import Any, TextIO

CHUNK = 256


class InputError(ValueError):
    """A malformed input line; the message names the file and line."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("files", nargs="*", help="JSON-lines files (default: stdin)")
    add("-o", "--output", help="write the verdicts here (atomically) instead of stdout")
    add("--output-field", default="output", help="field holding the model output (default: output)")
    add("--gold-field", default="gold", help="field holding the gold answer (default: gold)")
    add("--keep", action="append", default=[], metavar="FIELD",
        help="copy this input field into each verdict (repeatable), e.g. --keep row_id")
    add("--workers", type=int, default=2, help="math-verify worker processes (default 2)")
    add("--timeout", type=float, default=5.0, help="seconds per answer before it counts as a timeout (default 5)")
    add("--extractors", help="comma-separated extractor order (default: "
        "boxed,final_answer,answer_heading,answer_is,bare,last_sentence)")
    add("--no-progress", action="store_true", help="no progress bar")


def _records(files: list[str]) -> Iterator[tuple[str, int, str]]:
    if not files:
        for number, line in enumerate(sys.stdin, 1):
            yield "<stdin>", number, line
        return
    for path in files:
        try:
            with open(path, encoding="utf-8") as handle:
                for number, line in enumerate(handle, 1):
                    yield path, number, line
        except OSError as err:
            raise InputError(f"{path}: cannot read: {err.strerror or err}") from err
        except UnicodeDecodeError as err:
            raise InputError(f"{path}: not UTF-8 text: {err}") from err


def read_pairs(files: list[str], output_field: str, gold_field: str,
               keep: list[str]) -> tuple[list[tuple[str, str]], list[dict[str, Any]]]:
    """All ``(output, gold)`` pairs (blank lines skipped) and the kept fields; :class:`InputError` if malformed."""
    pairs, kept = [], []
    for path, number, line in _records(files):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise InputError(f"{where}: not valid JSON ({err.msg} at column {err.colno})") from None
        if not isinstance(row, dict):
            raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
        for field in (output_field, gold_field):
            if field not in row:
                raise InputError(f"{where}: no field '{field}' (fields: {', '.join(row) or 'none'})")
        output, gold = row[output_field], row[gold_field]
        if not isinstance(output, str):
            raise InputError(f"{where}: field '{output_field}' must be a string, got {type(output).__name__}")
        if gold is None or isinstance(gold, (dict, list, bool)):
            raise InputError(f"{where}: field '{gold_field}' must be a string or a number, got {json.dumps(gold)}")
        pairs.append((output, str(gold)))
        kept.append({k: row.get(k) for k in keep})
    return pairs, kept


def _write(lines: list[str], path: str | None, stdout: TextIO) -> None:
    if path is None:
        stdout.writelines(lines)
        stdout.flush()
        return
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".grade-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.writelines(lines)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def run(args: argparse.Namespace) -> int:
    """Run ``alignrl grade``; returns the exit code."""
    from tqdm import tqdm

    from alignrl.grading import EXTRACTORS, GraderConfig, GraderPool

    if args.workers < 1 or args.timeout <= 0:
        print("error: --workers must be >= 1 and --timeout > 0", file=sys.stderr)
        return 2
    config = replace(GraderConfig(), timeout=args.timeout)
    if args.extractors:
        names = tuple(n.strip() for n in args.extractors.split(",") if n.strip())
        unknown = [n for n in names if n not in EXTRACTORS]
        if unknown:
            print(f"error: unknown extractor(s) {', '.join(unknown)}; known: {', '.join(EXTRACTORS)}",
                  file=sys.stderr)
            return 2
        config = replace(config, extractors=names)
    try:
        pairs, kept = read_pairs(args.files, args.output_field, args.gold_field, args.keep)
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    lines: list[str] = []
    reasons: Counter[str] = Counter()
    with GraderPool(num_workers=args.workers, config=config) as pool, \
            tqdm(total=len(pairs), unit="answer", desc="grade", file=sys.stderr, disable=args.no_progress,
                 dynamic_ncols=True) as bar:
        for lo in range(0, len(pairs), CHUNK):
            for verdict, extra in zip(pool.grade_many(pairs[lo:lo + CHUNK]), kept[lo:lo + CHUNK]):
                reasons[verdict.reason] += 1
                lines.append(json.dumps({**extra, **verdict.to_dict()}, ensure_ascii=False) + "\n")
            bar.update(min(CHUNK, len(pairs) - lo))
    _write(lines, args.output, sys.stdout)
    seconds = time.perf_counter() - start
    share = reasons["correct"] / len(pairs) if pairs else 0.0
    print(f"graded {len(pairs)} answers in {seconds:.1f} s ({len(pairs) / max(seconds, 1e-9):.0f}/s): "
          f"{reasons['correct']} correct ({share:.1%}); " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())),
          file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alignrl grade",
                                     description="Grade JSON lines of model outputs against gold answers.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
