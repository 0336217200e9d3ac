"""``alignrl grade``: grade JSON lines of model outputs against gold answers.

Input: JSON lines with an output and a gold field (files, or stdin when none). Output: one JSON object per
input line, in order, with ``correct``, ``extracted``, ``reason`` and ``method`` (plus fields named by
``--keep``, and with ``--explain`` an ``explain`` object: the extractor that fired, its character offset in the
output, why it won, every candidate, and the form compared with the gold), to stdout or ``--output`` (written
whole or not at all). A lone UTF-16 surrogate in a field (``"\\ud800"``, valid JSON) is written ``\\u``-escaped
and its input line is named on stderr. Progress and the summary go to stderr.
Exit codes: 0 done, 2 bad input or arguments, 130 interrupted (Ctrl-C; ``--output`` is then left untouched).
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
    """Bad input or arguments (a malformed line: the message names the file and line); exit status 2."""


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
    add("--extractors", help="comma-separated extractors (default: boxed,final_answer,answer_heading,answer_is,"
        "bare,last_sentence); the answer markers among them are ranked by position, the others are fallbacks in "
        "this order")
    add("--ranking", choices=("position", "order"), default="position",
        help="position (default): the last answer marker wins; order: the first extractor in --extractors order "
             "that finds an answer wins (see alignrl.grading.GraderConfig)")
    add("--explain", action="store_true", help="add to each verdict which extractor fired, at which character "
        "offset, the candidates and why the winner won")
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


def read_pairs(files: list[str], output_field: str, gold_field: str, keep: list[str]
               ) -> tuple[list[tuple[str, str]], list[dict[str, Any]], list[str]]:
    """All ``(output, gold)`` pairs (blank lines skipped), the kept fields and each pair's ``file:line``;
    :class:`InputError` if malformed."""
    pairs, kept, where_from = [], [], []
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
        where_from.append(where)
    return pairs, kept, where_from


def json_line(record: dict[str, Any], ascii_only: bool = False) -> tuple[str, bool]:
    """``record`` as one JSON line, and whether it had to be ``\\u``-escaped (a lone surrogate cannot be UTF-8).
    ``ascii_only``: escape every non-ASCII character (for a terminal that cannot show UTF-8)."""
    line = json.dumps(record, ensure_ascii=ascii_only) + "\n"
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(record, ensure_ascii=True) + "\n", True
    return line, False


def _check_output_path(path: str | None) -> None:
    """Refuse, before any grading, an ``--output`` that could not be written (so no verdict is computed in vain)."""
    if path is None:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise InputError(f"--output {path}: is a folder; give a file path")
    if not os.path.isdir(folder):
        raise InputError(f"--output {path}: folder {folder} does not exist")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise InputError(f"--output {path}: folder {folder} is not writable")


def explain(output: str, gold: str, config: Any) -> dict[str, Any]:
    """What ``--explain`` adds to a verdict: the extraction's winner, offset, reason and candidates, and the form of
    the answer that was compared with the gold."""
    from alignrl.grading.extract import find_answer
    from alignrl.grading.grader import comparison_form

    found = find_answer(output, config)
    return {**found.to_dict(),
            "compared_as": comparison_form(found.answer, gold) if found.answer is not None else None}


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


def _config(args: argparse.Namespace) -> Any:
    """The :class:`GraderConfig` the arguments ask for; :class:`InputError` for a bad value."""
    from alignrl.grading import EXTRACTORS, GraderConfig

    if args.workers < 1 or args.timeout <= 0:
        raise InputError("--workers must be >= 1 and --timeout > 0")
    config = replace(GraderConfig(), timeout=args.timeout, ranking=args.ranking)
    if args.extractors:
        names = tuple(n.strip() for n in args.extractors.split(",") if n.strip())
        unknown = [n for n in names if n not in EXTRACTORS]
        if unknown or not names:
            raise InputError(f"unknown extractor(s) {', '.join(unknown) or '(none given)'}; "
                             f"known: {', '.join(EXTRACTORS)}")
        config = replace(config, extractors=names)
    return config


def _grade(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from alignrl.grading import GraderPool

    config = _config(args)
    _check_output_path(args.output)
    pairs, kept, where_from = read_pairs(args.files, args.output_field, args.gold_field, args.keep)
    encoding = (getattr(sys.stdout, "encoding", None) or "utf-8").lower().replace("-", "").replace("_", "")
    ascii_only = args.output is None and encoding != "utf8"
    start = time.perf_counter()
    lines: list[str] = []
    escaped: list[str] = []
    reasons: Counter[str] = Counter()
    with GraderPool(num_workers=args.workers, config=config) as pool, \
            tqdm(total=len(pairs), unit="answer", desc="grade", file=sys.stderr, disable=args.no_progress,
                 dynamic_ncols=True) as bar:
        for lo in range(0, len(pairs), CHUNK):
            for i, verdict in enumerate(pool.grade_many(pairs[lo:lo + CHUNK]), lo):
                reasons[verdict.reason] += 1
                record = {**kept[i], **verdict.to_dict()}
                if args.explain:
                    record["explain"] = explain(*pairs[i], config)
                line, was_escaped = json_line(record, ascii_only)
                lines.append(line)
                if was_escaped:
                    escaped.append(where_from[i])
            bar.update(min(CHUNK, len(pairs) - lo))
    if escaped:
        print(f"alignrl grade: note: {len(escaped)} verdict(s) hold a lone UTF-16 surrogate (first: {escaped[0]}); "
              "they are written \\u-escaped, so the output stays valid UTF-8 JSON", file=sys.stderr)
    try:
        _write(lines, args.output, sys.stdout)
    except OSError as err:
        raise InputError(f"cannot write {args.output or 'stdout'}: {err.strerror or err}") from err
    seconds = time.perf_counter() - start
    share = reasons["correct"] / len(pairs) if pairs else 0.0
    print(f"graded {len(pairs)} answers in {seconds:.1f} s ({len(pairs) / max(seconds, 1e-9):.0f}/s): "
          f"{reasons['correct']} correct ({share:.1%}); " + ", ".join(f"{k} {v}" for k, v in sorted(reasons.items())),
          file=sys.stderr)
    return 0


def run(args: argparse.Namespace) -> int:
    """Run ``alignrl grade``; returns the exit code (0 done, 2 bad input, 130 interrupted)."""
    try:
        return _grade(args)
    except InputError as err:
        print(f"alignrl grade: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignrl grade: interrupted", file=sys.stderr)
        return 130


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alignrl grade",
                                     description="Grade JSON lines of model outputs against gold answers.")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
