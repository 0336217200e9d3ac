"""``alignrl quickstart``: the embedded default, end to end on a laptop CPU with no network.

1. build the task (train/held-out prompts, imperfect demonstrations), a character tokenizer and a tiny Llama;
2. behaviour-clone the demonstrations with TRL's SFTTrainer (``alignrl.sft``);
3. GRPO with the math-verifier reward through the same loop and recipe schema as ``alignrl train``;
4. greedy pass@1 on held-out prompts before and after RL; ``report.json``, ``report.md`` and PNG curves.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alignrl.quickstart.task import TaskSpec, demonstration_stats, make_demonstrations, make_prompts
from alignrl.quickstart.tiny_model import build_model, build_tokenizer, count_parameters, quickstart_sft_params
from alignrl.run_dir import RunDirError
from alignrl.sft import SFTParams


# everything a quickstart writes into --out: a folder holding anything else is never deleted
QUICKSTART_ENTRIES = {"data", "bc", "grpo", "report.json", "report.md", "learning.png", "grpo_curves.png"}


@dataclass
class QuickstartSettings:
    """Everything the quickstart runs with; written into report.json."""

    task: TaskSpec = field(default_factory=TaskSpec)
    model_preset: str = "quickstart"
    sft: SFTParams = field(default_factory=lambda: quickstart_sft_params(logging_steps=50, progress_bar=True))
    rl_prompts: int = 8192  # train-split prompts for GRPO (disjoint from held-out)
    grpo: dict[str, Any] = field(default_factory=lambda: {
        "rollout": {"prompts_per_step": 32, "n": 8, "temperature": 1.0, "max_new_tokens": 16},
        "algorithm": {"name": "grpo", "loss_aggregation": "token_mean"},
        "reward": {"functions": [{"name": "math"}]},
        "trainer": {"max_steps": 60, "lr": 1e-4, "micro_batch_size": 256, "save_steps": 0,
                    "mixed_precision": "auto", "warmup_steps": 0},
        "eval": {"every_steps": 10, "max_prompts": 200},
    })


def run_quickstart(out: str | Path, seed: int = 0, overwrite: bool = False,
                   settings: QuickstartSettings | None = None) -> dict[str, Any]:
    """Run the whole quickstart into ``out``; returns the report (also written to ``out/report.json``)."""
    from alignrl.config import load_config
    from alignrl.logging.plot import plot_run
    from alignrl.loop import train
    from alignrl.quickstart.report import write_report
    from alignrl.sft import run_sft

    settings = settings or QuickstartSettings()
    out = Path(out)
    if (out / "report.json").exists() and not overwrite:
        raise RunDirError(f"{out}: holds a finished quickstart; pass --overwrite or another --out")
    if out.exists() and not (out.is_dir() and set(p.name for p in out.iterdir()) <= QUICKSTART_ENTRIES):
        raise RunDirError(f"{out}: exists and does not hold a quickstart (only a quickstart's own files are ever "
                          f"deleted); pass another --out")
    if out.exists():
        shutil.rmtree(out)  # an unfinished quickstart (or one the user asked to overwrite)
    (out / "data").mkdir(parents=True)
    start = time.perf_counter()
    spec = settings.task

    demos = make_demonstrations(spec.n_demonstrations, seed, spec)
    rl_rows = make_prompts(settings.rl_prompts, seed + 1, "train", spec)
    heldout = make_prompts(spec.n_heldout, seed, "heldout", spec)
    for name, rows in (("demonstrations", demos), ("rl_prompts", rl_rows), ("heldout", heldout)):
        _write_jsonl(out / "data" / f"{name}.jsonl", rows)
    wrong = demonstration_stats(demos)["wrong_share"]
    _say(f"task: {len(demos):,} demonstrations ({wrong:.0%} wrong), {len(rl_rows):,} RL prompts, {len(heldout)} "
         f"held-out prompts -> {out / 'data'}")

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, settings.model_preset, seed=seed)
    sft = SFTParams(**{**asdict(settings.sft), "seed": seed})
    _say(f"[1/3] behaviour cloning: {sft.max_steps} SFT steps of {sft.per_device_train_batch_size} "
         f"demonstrations ({count_parameters(model):,}-parameter model)")
    t_bc = time.perf_counter()
    run_sft(model, tokenizer, demos, out / "bc", sft)
    bc_seconds = time.perf_counter() - t_bc
    max_new_tokens = settings.grpo["rollout"]["max_new_tokens"]
    bc_eval = evaluate_model(out / "bc", out / "data" / "heldout.jsonl", max_new_tokens)
    _say(f"      BC model: greedy pass@1 {bc_eval['pass_at_1']:.1%} on the {len(heldout)} held-out prompts")

    recipe = {**settings.grpo, "model": {"path": str(out / "bc")},
              "data": {"train": str(out / "data" / "rl_prompts.jsonl"), "eval": str(out / "data" / "heldout.jsonl")}}
    recipe["trainer"] = {**recipe["trainer"], "output_dir": str(out / "grpo"), "seed": seed}
    rollout, evaluation = recipe["rollout"], recipe["eval"]
    _say(f"[2/3] GRPO: {recipe['trainer']['max_steps']} steps of {rollout['prompts_per_step']} prompts x "
         f"{rollout['n']} samples; held-out pass@1 on the first {evaluation['max_prompts']} prompts every "
         f"{evaluation['every_steps']} steps (in {out / 'grpo' / 'metrics.jsonl'})")
    t_rl = time.perf_counter()
    run_dir = train(load_config(base=recipe))
    rl_seconds = time.perf_counter() - t_rl
    final = sorted(run_dir.glob("checkpoint-*"))[-1]
    _say(f"[3/3] held-out evaluation of {final.name} on all {len(heldout)} prompts, then the report")
    rl_eval = evaluate_model(final, out / "data" / "heldout.jsonl", max_new_tokens)
    plot_run(run_dir, out / "grpo_curves.png")

    report = {
        "seed": seed, "bc_pass_at_1": bc_eval["pass_at_1"], "rl_pass_at_1": rl_eval["pass_at_1"],
        "improvement_points": 100 * (rl_eval["pass_at_1"] - bc_eval["pass_at_1"]),
        "wall_seconds": time.perf_counter() - start, "bc_seconds": bc_seconds, "rl_seconds": rl_seconds,
        "heldout_prompts": len(heldout), "eval_decoding": "greedy", "device": _device_name(),
        "demonstrations": demonstration_stats(demos), "model_parameters": count_parameters(model),
        "bc_eval": bc_eval, "rl_eval": rl_eval, "rl_checkpoint": str(final),
        "settings": {"task": asdict(spec), "model_preset": settings.model_preset, "sft": asdict(sft),
                     "grpo_recipe": recipe},
    }
    write_report(out, report, run_dir)
    return report


def evaluate_model(model_dir: Path, prompts_file: Path, max_new_tokens: int) -> dict[str, float]:
    """Greedy pass@1 of a saved model on a prompt file, scored by the math reward (same code as training eval)."""
    from alignrl.config.schema import DataConfig, RewardFunctionConfig
    from alignrl.data import prepare_prompts
    from alignrl.evaluation.core import evaluate_prompts, summarize
    from alignrl.rewards.scoring import RewardSet
    from alignrl.rollout import SamplingParams
    from alignrl.rollout.hf_engine import HFEngine

    engine = HFEngine.from_pretrained(str(model_dir), dtype="float32")
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    prompts = prepare_prompts(str(prompts_file), "train", DataConfig(train=str(prompts_file)), engine.tokenizer,
                              None, params.max_new_tokens)
    records = evaluate_prompts(engine, prompts, list(range(len(prompts))), params,
                               RewardSet([RewardFunctionConfig(name="math")]), batch_size=250)
    return summarize(records)


def _say(line: str) -> None:
    print(f"quickstart: {line}", file=sys.stderr, flush=True)


def _device_name() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda ({torch.cuda.get_device_name(0)})"
    return f"cpu ({torch.get_num_threads()} threads)"


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
