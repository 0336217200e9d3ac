"""One side of the train suite in a fresh process: ``python -m alignrl.bench.train_child SIDE JSON``.

SIDE is ``alignrl`` (``alignrl.loop.train``) or ``trl`` (TRL's ``GRPOTrainer``). JSON holds ``model`` (a saved model
folder), ``prompts`` (JSONL with ``prompt`` and ``answer``), ``out`` (a scratch folder), ``warmup`` and ``steps``
and ``points``: a list of ``{"n": K, "prompts_per_step": P, "max_new_tokens": L, "lr": LR}``, run one after another.
For each point the child runs ``warmup + steps + 1`` optimiser steps and times the ``steps`` intervals between the
ends of steps ``warmup`` .. ``warmup + steps`` (the last step is excluded: alignrl saves its final checkpoint in it).
It prints one line ``MARK`` + JSON: per point the step seconds, completion tokens and seconds in generate / score /
update; then the process exits and the parent reads its peak resident memory.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

MARK = "ALIGNRL_BENCH_TRAIN "
PHASES = ("generate", "score", "update")


def _window(ends: list[float], warmup: int, steps: int) -> list[float]:
    """Seconds of the timed steps from the wall clock at the end of every step (index 0 = step 1)."""
    return [ends[i] - ends[i - 1] for i in range(warmup, warmup + steps)]


def run_alignrl(args: dict[str, Any], point: dict[str, Any], out: Path) -> dict[str, Any]:
    """``point`` through ``alignrl.loop.train``; phases from the loop's own ``time/*`` metrics."""
    from alignrl.config import load_config
    from alignrl.loop import train

    total = args["warmup"] + args["steps"] + 1
    batch = point["prompts_per_step"] * point["n"]
    recipe = {
        "model": {"path": args["model"]},
        "data": {"train": args["prompts"]},
        "rollout": {"prompts_per_step": point["prompts_per_step"], "n": point["n"], "temperature": 1.0,
                    "max_new_tokens": point["max_new_tokens"]},
        "algorithm": {"name": "grpo", "loss_aggregation": "token_mean", "kl_coef": 0.0},
        "reward": {"functions": [{"name": "math"}]},
        "trainer": {"output_dir": str(out), "seed": 0, "max_steps": total, "lr": point["lr"],
                    "lr_scheduler": "constant", "warmup_steps": 0, "micro_batch_size": batch, "save_steps": 0,
                    "mixed_precision": args["precision"]},
        "eval": {"every_steps": 0},
        "logging": {"progress_bar": False, "log_completions": 0},
    }
    ends: list[float] = []
    records: list[dict[str, float]] = []

    def on_step(step: int, components: Any, metrics: dict[str, float]) -> None:
        ends.append(time.perf_counter())
        records.append(dict(metrics))

    train(load_config(base=recipe), callbacks=[on_step])
    timed = records[args["warmup"]:args["warmup"] + args["steps"]]
    return {"step_s": _window(ends, args["warmup"], args["steps"]),
            "tokens": [r["response_length"] * batch for r in timed],
            "phases": {k: [r[f"time/{k}"] + (r.get("time/sync", 0.0) if k == "update" else 0.0) for r in timed]
                       for k in PHASES}}


def run_trl(args: dict[str, Any], point: dict[str, Any], out: Path) -> dict[str, Any]:
    """``point`` through TRL's ``GRPOTrainer`` with the same settings; generate and score timed by wrapping
    ``_generate`` and ``_calculate_rewards``, update = step - generate - score (backward, optimiser, logging)."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from alignrl.rewards.math import math_reward

    rows = [json.loads(line) for line in Path(args["prompts"]).read_text().splitlines() if line.strip()]
    dataset = Dataset.from_list([{"prompt": r["prompt"], "answer": r["answer"]} for r in rows])
    batch = point["prompts_per_step"] * point["n"]
    total = args["warmup"] + args["steps"] + 1
    spent = {"generate": 0.0, "score": 0.0}
    ends: list[float] = []
    marks: list[dict[str, float]] = []
    lengths: list[float] = []

    class Timed(GRPOTrainer):
        def _generate(self, prompts: list) -> Any:
            start = time.perf_counter()
            try:
                return super()._generate(prompts)
            finally:
                spent["generate"] += time.perf_counter() - start

        def _calculate_rewards(self, *a: Any, **k: Any) -> Any:
            start = time.perf_counter()
            try:
                return super()._calculate_rewards(*a, **k)
            finally:
                spent["score"] += time.perf_counter() - start

    class StepEnds(TrainerCallback):
        def on_step_end(self, *a: Any, **k: Any) -> None:
            ends.append(time.perf_counter())
            marks.append(dict(spent))

        def on_log(self, _args: Any, _state: Any, _control: Any, logs: dict | None = None, **k: Any) -> None:
            if logs and "completions/mean_length" in logs:
                lengths.append(float(logs["completions/mean_length"]))

    def math(prompts: list, completions: list, **columns: Any) -> list[float]:
        return math_reward(prompts, completions, **columns)

    bf16 = args["precision"] == "bf16"
    config = GRPOConfig(
        output_dir=str(out), seed=0, max_steps=total, learning_rate=point["lr"], lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1.0,
        optim="adamw_torch", per_device_train_batch_size=batch, gradient_accumulation_steps=1,
        num_generations=point["n"], max_completion_length=point["max_new_tokens"], temperature=1.0, top_p=1.0,
        top_k=0, beta=0.0, epsilon=0.2, loss_type="dapo", scale_rewards="group", num_iterations=1,
        mask_truncated_completions=False, bf16=bf16, fp16=False, use_cpu=not torch.cuda.is_available(),
        logging_steps=1, save_strategy="no", report_to="none", disable_tqdm=True, log_completions=False,
        dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(args["model"], dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(args["model"])
    trainer = Timed(model=model, reward_funcs=[math], args=config, train_dataset=dataset,
                    processing_class=tokenizer, callbacks=[StepEnds()])
    trainer.train()
    w, s = args["warmup"], args["steps"]
    step_s = _window(ends, w, s)
    gen = [marks[i]["generate"] - marks[i - 1]["generate"] for i in range(w, w + s)]
    score = [marks[i]["score"] - marks[i - 1]["score"] for i in range(w, w + s)]
    return {"step_s": step_s, "tokens": [length * batch for length in lengths[w:w + s]],
            "phases": {"generate": gen, "score": score,
                       "update": [t - g - c for t, g, c in zip(step_s, gen, score)]}}


def main(argv: list[str]) -> None:
    side, args = argv[0], json.loads(argv[1])
    runner = {"alignrl": run_alignrl, "trl": run_trl}[side]
    import torch

    results = []
    for index, point in enumerate(args["points"]):
        out = Path(args["out"]) / f"{side}-{index}"
        results.append({"point": point, **runner(args, point, out)})
    versions = {"torch": torch.__version__, "torch_threads": torch.get_num_threads()}
    for name in ("transformers", "trl", "alignrl"):
        versions[name] = getattr(__import__(name), "__version__", "unknown")
    print(MARK + json.dumps({"side": side, "results": results, "versions": versions}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
