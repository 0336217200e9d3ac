"""Preference data built here, with no hub: synthetic pairs from the quickstart task, and real pairs from labelled
model outputs (e.g. ``../shared/data/grader-dev/math_test_labelled.jsonl``).

**Synthetic** (``synthetic_pairs``): the prompt is a quickstart prompt (``"482+396="``), ``chosen`` the correct
worked completion (``"010\\boxed{878}"``) and ``rejected`` a wrong one of a known kind: the demonstrator's dropped
tens carry (the quickstart's systematic bug), a flipped carry with the arithmetic kept consistent with it, or the
right carries with one wrong answer digit. A share ``flip_rate`` of the pairs have their labels swapped (label
noise, marked ``flipped: true``); held-out pairs are built from the task's held-out prompts (disjoint from the
train prompts for every seed) and are never flipped. Every row carries ``error_kind`` so accuracy can be grouped
by it (``alignrl score --group-by error_kind``).

**Labelled outputs** (``labelled_output_pairs``): for every problem with at least one correct and one incorrect
output, pairs (correct, incorrect) of outputs for the same problem; problems are split into train and test by a
seeded shuffle, so no problem's outputs appear on both sides.

Command line::

    alignrl rm data synthetic --out runs/prefs --seed 0 [--n-train 20000 --n-test 2000 --flip-rate 0.1]
    alignrl rm data labelled --input ../shared/data/grader-dev/math_test_labelled.jsonl --out runs/prefs_real
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignrl.quickstart.task import TaskSpec, column_add, format_completion, make_prompts, parse_prompt
from alignrl.run_dir import RunDirError

ERROR_KINDS = ("dropped_carry", "flipped_carry", "wrong_digit")


@dataclass(frozen=True)
class SyntheticSettings:
    """What ``synthetic_pairs`` builds; written next to the data as ``settings.json``."""

    n_train: int = 20_000
    n_test: int = 2_000
    flip_rate: float = 0.1
    """Share of train pairs with chosen and rejected swapped (label noise); test pairs are never flipped."""
    error_kinds: tuple[str, ...] = ERROR_KINDS
    """Kinds of wrong completion, drawn uniformly per pair (a kind that cannot apply to a prompt, e.g. a dropped
    tens carry when the tens column has no carry, is replaced by another)."""
    test_seed_offset: int = 1000
    """Held-out pairs use seed + this, a seed never used for training pairs."""

    def __post_init__(self) -> None:
        if not 0 <= self.flip_rate < 0.5:
            raise ValueError(f"flip_rate must be in [0, 0.5), got {self.flip_rate}")
        unknown = sorted(set(self.error_kinds) - set(ERROR_KINDS))
        if unknown or not self.error_kinds:
            raise ValueError(f"error_kinds must be a non-empty subset of {ERROR_KINDS}, got {self.error_kinds}")


def wrong_completion(prompt: str, kind: str, rng: random.Random, spec: TaskSpec) -> str | None:
    """A wrong worked completion of ``kind`` for ``prompt``, or None when that kind cannot apply."""
    a, b = parse_prompt(prompt)
    carries, gold = column_add(a, b, spec.n_digits)
    if kind == "dropped_carry":
        if carries[spec.bug_column] != 1:
            return None
        wrong, total = column_add(a, b, spec.n_digits, drop_column=spec.bug_column)
    elif kind == "flipped_carry":
        # a carry out of the last column would change the sum's length; flip only the inner columns
        column = rng.randrange(max(spec.n_digits - 1, 1))
        wrong, total = column_add(a, b, spec.n_digits, flip_column=column)
    elif kind == "wrong_digit":
        digits = list(str(gold))
        position = rng.randrange(len(digits))
        choices = [d for d in "0123456789" if d != digits[position] and not (position == 0 and d == "0")]
        digits[position] = rng.choice(choices)
        wrong, total = carries, int("".join(digits))
    else:
        raise ValueError(f"unknown error kind {kind!r}; known: {ERROR_KINDS}")
    if total == gold:
        return None
    return format_completion(wrong, total, spec.separator)


def synthetic_pairs(n: int, seed: int, split: str, settings: SyntheticSettings,
                    spec: TaskSpec | None = None) -> list[dict[str, Any]]:
    """``n`` preference rows on distinct prompts of ``split`` ("train" or "heldout"), deterministic given ``seed``."""
    spec = spec or TaskSpec()
    rng = random.Random(f"alignrl-preferences/{seed}/{split}")
    flip_rate = settings.flip_rate if split == "train" else 0.0
    rows = []
    for prompt_row in make_prompts(n, seed, split, spec):  # type: ignore[arg-type]
        prompt = prompt_row["prompt"]
        kinds = list(settings.error_kinds)
        rng.shuffle(kinds)
        rejected, kind = None, ""
        for kind in kinds:
            rejected = wrong_completion(prompt, kind, rng, spec)
            if rejected is not None:
                break
        if rejected is None:  # only a kind that never applies here was asked for: fall back to a wrong digit
            kind, rejected = "wrong_digit", wrong_completion(prompt, "wrong_digit", rng, spec)
        chosen = format_completion(*column_add(*parse_prompt(prompt), spec.n_digits), spec.separator)
        flipped = rng.random() < flip_rate
        if flipped:
            chosen, rejected = rejected, chosen
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected, "error_kind": kind,
                     "flipped": flipped, "answer": prompt_row["answer"]})
    return rows


def labelled_output_pairs(rows: Iterable[dict[str, Any]], test_share: float = 0.3, seed: int = 0,
                          max_pairs_per_problem: int | None = None, chat: bool = True) -> tuple[list[dict], list[dict]]:
    """(train, test) preference rows from labelled outputs (``problem``, ``output``, ``label`` true/false; rows
    whose label is missing are ignored), split by problem. With ``chat`` the prompt is one user message (so the
    pair is formatted by the reward model's chat template), else the problem text itself."""
    by_problem: dict[str, dict[bool, list[dict]]] = defaultdict(lambda: {True: [], False: []})
    for row in rows:
        if row.get("label") is None or "label_kind" in row and row["label_kind"] != "final_answer":
            continue
        by_problem[row["problem"]][bool(row["label"])].append(row)
    problems = sorted(p for p, sides in by_problem.items() if sides[True] and sides[False])
    rng = random.Random(f"alignrl-labelled-pairs/{seed}")
    rng.shuffle(problems)
    n_test = round(len(problems) * test_share)
    splits: tuple[list[dict], list[dict]] = ([], [])
    for rank, problem in enumerate(problems):
        pairs = [(good, bad) for good in by_problem[problem][True] for bad in by_problem[problem][False]]
        if max_pairs_per_problem is not None and len(pairs) > max_pairs_per_problem:
            pairs = rng.sample(pairs, max_pairs_per_problem)
        target = splits[1] if rank < n_test else splits[0]
        for good, bad in pairs:
            prompt: Any = [{"role": "user", "content": problem}] if chat else problem
            target.append({"prompt": prompt, "chosen": good["output"], "rejected": bad["output"],
                           "source": good.get("source", ""), "chosen_id": good.get("row_id", ""),
                           "rejected_id": bad.get("row_id", "")})
    return splits


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` atomically (a temporary file renamed into place)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def _refuse_existing(out: Path, names: list[str], overwrite: bool) -> None:
    existing = [n for n in names if (out / n).exists()]
    if existing and not overwrite:
        raise RunDirError(f"{out}: already holds {', '.join(existing)}; pass --overwrite to replace them")


def _synthetic(args: argparse.Namespace) -> int:
    settings = SyntheticSettings(n_train=args.n_train, n_test=args.n_test, flip_rate=args.flip_rate,
                                 error_kinds=tuple(args.error_kinds))
    out = Path(args.out)
    _refuse_existing(out, ["train.jsonl", "test.jsonl"], args.overwrite)
    train = synthetic_pairs(settings.n_train, args.seed, "train", settings)
    test = synthetic_pairs(settings.n_test, args.seed + settings.test_seed_offset, "heldout", settings)
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    meta = {"kind": "synthetic", "seed": args.seed, "test_seed": args.seed + settings.test_seed_offset,
            **asdict(settings), "flipped_in_train": sum(r["flipped"] for r in train)}
    (out / "settings.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{len(train)} train pairs ({meta['flipped_in_train']} flipped), {len(test)} test pairs -> {out}")
    return 0


def _labelled(args: argparse.Namespace) -> int:
    from alignrl.data import load_rows

    out = Path(args.out)
    _refuse_existing(out, ["train.jsonl", "test.jsonl"], args.overwrite)
    rows = load_rows(args.input)
    for index, row in enumerate(rows):
        missing = [k for k in ("problem", "output", "label") if k not in row]
        if missing:
            raise ValueError(f"{args.input}, row {index}: missing field '{missing[0]}' (expected problem, output, "
                             f"label)")
    train, test = labelled_output_pairs(rows, args.test_share, args.seed, args.max_pairs_per_problem,
                                        chat=args.format == "chat")
    write_jsonl(out / "train.jsonl", train)
    write_jsonl(out / "test.jsonl", test)
    meta = {"kind": "labelled", "input": str(args.input), "seed": args.seed, "test_share": args.test_share,
            "max_pairs_per_problem": args.max_pairs_per_problem, "train_pairs": len(train), "test_pairs": len(test),
            "format": args.format, "train_problems": len({json.dumps(r["prompt"]) for r in train}),
            "test_problems": len({json.dumps(r["prompt"]) for r in test})}
    (out / "settings.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(f"{meta['train_pairs']} train pairs ({meta['train_problems']} problems), {meta['test_pairs']} test pairs "
          f"({meta['test_problems']} problems) -> {out}")
    return 0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``alignrl rm data {synthetic,labelled}``."""
    kinds = parser.add_subparsers(dest="kind", required=True)
    syn = kinds.add_parser("synthetic", help="correct vs wrong worked solutions of the quickstart task")
    syn.add_argument("--out", required=True, help="folder for train.jsonl, test.jsonl and settings.json")
    syn.add_argument("--seed", type=int, default=0, help="seed of the train pairs (test pairs use seed + 1000)")
    syn.add_argument("--n-train", type=int, default=SyntheticSettings.n_train, help="train pairs")
    syn.add_argument("--n-test", type=int, default=SyntheticSettings.n_test, help="held-out pairs")
    syn.add_argument("--flip-rate", type=float, default=SyntheticSettings.flip_rate,
                     help="share of train pairs whose labels are swapped (label noise)")
    syn.add_argument("--error-kinds", nargs="+", default=list(ERROR_KINDS), choices=ERROR_KINDS,
                     help="kinds of wrong completion to draw from")
    syn.add_argument("--overwrite", action="store_true", help="replace existing train/test files in --out")
    syn.set_defaults(data_func=_synthetic)
    lab = kinds.add_parser("labelled", help="(correct, incorrect) output pairs per problem, split by problem")
    lab.add_argument("--input", required=True, help="JSONL with problem, output, label (true/false) per row")
    lab.add_argument("--out", required=True, help="folder for train.jsonl, test.jsonl and settings.json")
    lab.add_argument("--seed", type=int, default=0, help="seed of the problem split")
    lab.add_argument("--test-share", type=float, default=0.3, help="share of problems held out for testing")
    lab.add_argument("--max-pairs-per-problem", type=int, default=None,
                     help="cap on the pairs formed from one problem (default: every correct x incorrect pair)")
    lab.add_argument("--format", choices=("chat", "text"), default="chat",
                     help="chat: the problem is a user message and each output an assistant message (formatted by "
                          "the reward model's chat template); text: problem + output as plain text")
    lab.add_argument("--overwrite", action="store_true", help="replace existing train/test files in --out")
    lab.set_defaults(data_func=_labelled)


def run(args: argparse.Namespace) -> int:
    return int(args.data_func(args))
