"""``alignrl eval math500``: flags, an optional YAML of the same keys (``eval/math500.yaml``), and the run.

Precedence: a flag given on the command line > the ``--config`` YAML > the built-in defaults (which
``eval/math500.yaml`` repeats). Imports stay light here: the heavy modules load inside :func:`run`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the math500 flags to ``parser``. Defaults are None so that a ``--config`` YAML can fill them."""
    add = parser.add_argument
    add("--config", help="YAML of settings with the flag names as keys (e.g. eval/math500.yaml)")
    add("--model", help="Hugging Face model folder or hub name")
    add("--out", help="output folder (results.json, samples.jsonl, report.md, accuracy_by_level.png)")
    add("--data", help="local MATH-500 JSONL or JSON array (fields problem, answer[, unique_id, level, subject]); "
                       "default: the hub dataset HuggingFaceH4/MATH-500, split test")
    add("--engine", help="rollout engine (default hf)")
    add("--dtype", help="auto (default), float32, bfloat16 or float16")
    add("--device", help="cpu / cuda / cuda:1 (default: cuda when available)")
    add("--instruction", help="appended to each problem after a blank line (default: 'Please reason step by "
                              "step, and put your final answer within \\boxed{}.')")
    add("--system-prompt", help="system message (default: none; the chat template's own default applies)")
    add("--no-chat-template", dest="chat_template", action="store_const", const=False,
        help="raw text prompt for base models")
    add("--n", type=int, help="samples per problem (default 1)")
    add("--temperature", type=float, help="0 = greedy (default 0)")
    add("--top-p", type=float, help="nucleus sampling (default 1.0)")
    add("--max-tokens", type=int, help="max new tokens per sample (default 4096)")
    add("--seed", type=int, help="sampling seed (default 0)")
    add("--batch-size", type=int, help="problems per generate call (default 32)")
    add("--limit", type=int, help="evaluate the first N problems only")
    add("--k", type=int, nargs="+", help="k values for pass@k and maj@k (default: powers of two <= n)")
    add("--grader-workers", type=int, help="grader processes (default 2)")
    add("--grader-timeout", type=float, help="seconds per answer sent to math-verify; a timeout counts as wrong "
                                               "(default: the grader's, 5)")
    add("--overwrite", action="store_const", const=True, help="start over: replace this command's own output "
                                                              "files in --out (nothing else there is touched)")
    add("--no-progress", dest="progress", action="store_const", const=False, help="no progress bar")


def resolve_config(args: argparse.Namespace) -> Any:
    """Merge defaults, the ``--config`` YAML and the flags into a ``Math500Config``."""
    import dataclasses

    import yaml

    from alignrl.evaluation.math500 import EvalError, Math500Config

    fields = {f.name for f in dataclasses.fields(Math500Config)}
    values: dict[str, Any] = {}
    if getattr(args, "config", None):
        try:
            with open(args.config, encoding="utf-8") as handle:
                loaded = yaml.safe_load(handle) or {}
        except (OSError, yaml.YAMLError) as err:
            raise EvalError(f"{args.config}: cannot read the config ({err})") from err
        if not isinstance(loaded, dict):
            raise EvalError(f"{args.config}: expected a mapping of settings")
        loaded = {str(key).replace("-", "_"): value for key, value in loaded.items()}
        unknown = sorted(set(loaded) - fields)
        if unknown:
            raise EvalError(f"{args.config}: unknown keys {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        values.update({key: value for key, value in loaded.items() if value is not None})
    values.update({key: value for key, value in vars(args).items() if key in fields and value is not None})
    for key in ("model", "out"):
        if not values.get(key):
            raise EvalError(f"--{key} is required (on the command line or in --config)")
    return Math500Config(**values)


def run(args: argparse.Namespace) -> int:
    """Run the evaluation; user errors print one line and return 2."""
    from alignrl.data import DataError
    from alignrl.evaluation.math500 import EvalError, run_math500

    try:
        results = run_math500(resolve_config(args))
    except (EvalError, DataError, FileNotFoundError) as err:
        print(f"alignrl eval math500: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("alignrl eval math500: interrupted; finished batches are saved: run the same command again to resume",
              file=sys.stderr)
        return 130
    overall = results["overall"]
    extra = ", ".join(f"{key} {100 * value:.1f}%" for key, value in overall.items()
                      if key.startswith(("pass@", "maj@")) and key != "pass@1")
    print(f"MATH-500 pass@1 {100 * overall['pass@1']:.1f}% on {overall['problems']} problems"
          + (f" ({extra})" if extra else "") + f"; report: {results['out']}/report.md")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alignrl eval math500",
                                     description="MATH-500 pass@1, pass@k and maj@k of a model")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
