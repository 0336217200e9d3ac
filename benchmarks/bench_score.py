"""Throughput of ``alignrl score``'s scorer against a plain transformers loop over the same pairs, same run.

    python benchmarks/bench_score.py --model runs/rm_smollm2 [--data pairs.jsonl] [--pairs 64] [--batch-size 16]
    python benchmarks/bench_score.py --smollm2 --pairs 64      # SmolLM2-135M-Instruct (PyPI GGUF), fresh head

Both sides score the same token ids (``alignrl.reward_model.pairs.encode``: prompt + response + EOS, truncated to
``--max-length`` from the left) at the same batch size in float32 on the CPU (or ``--device``):
- *scorer*: :class:`alignrl.reward_model.scorer.SequenceScorer` (longest first, right padding, distinct sequences once);
- *plain*: batches of ``--batch-size`` sequences in input order (chosen, rejected, chosen, ...), ``tokenizer.pad``
  (right), ``model(**batch).logits`` under ``torch.inference_mode``.
They run alternately, ``--repeats`` times each, after one warm-up batch; the figures are medians in pairs/s, with
their ratio and the largest score difference between the two (a correctness check). With ``--smollm2`` the head is
freshly initialised (seed 0): throughput does not depend on its weights. Default data: pairs formed from
``../shared/data/grader-dev/math_test_labelled.jsonl`` (per problem, correct and incorrect outputs zipped).
The machine is shared: read the ratio, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
GRADER_DEV = REPO.parent / "shared" / "data" / "grader-dev" / "math_test_labelled.jsonl"


def grader_dev_pairs(path: Path, limit: int) -> list[dict]:
    """Per problem, its correct and incorrect outputs zipped in file order (each output in at most one pair)."""
    by_problem: dict[str, dict[bool, list[str]]] = {}
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            row = json.loads(line)
            if row.get("label") in (True, False):
                outputs = by_problem.setdefault(row["problem"], {True: [], False: []})
                outputs[bool(row["label"])].append(row["output"])
    pairs = [{"prompt": problem + "\n\n", "chosen": good, "rejected": bad}
             for problem, outs in by_problem.items() for good, bad in zip(outs[True], outs[False])]
    return pairs[:limit]


def load_pairs(args: argparse.Namespace) -> list[dict]:
    from alignrl.reward_model.pairs import load_table, parse_preference_rows

    if args.data:
        parsed, _ = parse_preference_rows(load_table(args.data), args.data)
        return [{"prompt": p.prompt, "chosen": p.chosen, "rejected": p.rejected} for p in parsed][:args.pairs]
    if not GRADER_DEV.is_file():
        raise SystemExit(f"no --data given and {GRADER_DEV} is absent: pass a pairs file")
    return grader_dev_pairs(GRADER_DEV, args.pairs)


def load_model(args: argparse.Namespace):
    from alignrl.reward_model.scorer import load_reward_model, resolve_device

    if args.model:
        return load_reward_model(args.model, device=args.device, dtype="float32")
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alignrl import smollm2

    if not smollm2.available():
        raise SystemExit(f"--smollm2 needs `{smollm2.INSTALL}`")
    folder = smollm2.gguf_folder()
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=smollm2.GGUF_NAME)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(folder, gguf_file=smollm2.GGUF_NAME, num_labels=1,
                                                               dtype=torch.float32)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.to(resolve_device(args.device)).eval(), tokenizer


@torch.inference_mode()
def plain_loop(model, tokenizer, sequences: list[list[int]], batch_size: int) -> torch.Tensor:
    tokenizer.padding_side = "right"
    device = next(model.parameters()).device
    scores = []
    for start in range(0, len(sequences), batch_size):
        batch = tokenizer.pad({"input_ids": sequences[start:start + batch_size]}, return_tensors="pt")
        scores.append(model(**{k: v.to(device) for k, v in batch.items()}).logits[:, 0].float().cpu())
    return torch.cat(scores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a saved sequence-classification reward model folder")
    source.add_argument("--smollm2", action="store_true", help="SmolLM2-135M-Instruct from PyPI with a fresh head")
    parser.add_argument("--data", help="preference pairs file (default: pairs from grader-dev)")
    parser.add_argument("--pairs", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=512, help="tokens per input (default 512)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", help="write the figures here as JSON")
    args = parser.parse_args()

    from alignrl.reward_model.scorer import SequenceScorer

    pairs = load_pairs(args)
    model, tokenizer = load_model(args)
    scorer = SequenceScorer(model, tokenizer, batch_size=args.batch_size, max_length=args.max_length)
    sequences = [scorer.encode(p["prompt"], p[part]).input_ids for p in pairs for part in ("chosen", "rejected")]
    lengths = sorted(len(s) for s in sequences)
    print(f"{len(pairs)} pairs, {len(sequences)} sequences ({len(set(map(tuple, sequences)))} distinct), tokens "
          f"min {lengths[0]} median {lengths[len(lengths) // 2]} max {lengths[-1]}; batch {args.batch_size}, "
          f"torch threads {torch.get_num_threads()}, device {scorer.device}", flush=True)
    plain_loop(model, tokenizer, sequences[:args.batch_size], args.batch_size)  # warm-up
    methods = {"scorer": lambda: scorer.score_ids(sequences),
               "plain": lambda: plain_loop(model, tokenizer, sequences, args.batch_size)}
    rates: dict[str, list[float]] = {name: [] for name in methods}
    results: dict[str, torch.Tensor] = {}
    for round_ in range(1, args.repeats + 1):
        for name, method in methods.items():
            start = time.perf_counter()
            results[name] = method()
            seconds = time.perf_counter() - start
            rates[name].append(len(pairs) / seconds)
            print(f"round {round_} {name}: {seconds:.2f} s, {rates[name][-1]:.2f} pairs/s", flush=True)
    median = {name: statistics.median(values) for name, values in rates.items()}
    difference = (results["scorer"] - results["plain"]).abs().max().item()
    figures = {"pairs": len(pairs), "batch_size": args.batch_size, "max_length": args.max_length,
               "pairs_per_second": median, "ratio_scorer_over_plain": median["scorer"] / median["plain"],
               "max_abs_score_difference": difference, "rounds": rates}
    print(f"scorer {median['scorer']:.2f} pairs/s, plain loop {median['plain']:.2f} pairs/s, ratio "
          f"{figures['ratio_scorer_over_plain']:.2f}x; largest score difference {difference:.2e}")
    if args.out:
        Path(args.out).write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
