"""Prepare a built-in task for RL: write its data files and behaviour-clone the tiny model on its demonstrations.

``prepare_task("harder", "runs/harder/seed0", seed=0)`` writes ``data/demonstrations.jsonl``, ``data/rl_prompts.jsonl``
and ``data/heldout.jsonl``, trains ``bc/`` with TRL's SFTTrainer (``alignrl.sft.run_sft``, the quickstart's tiny
Llama and BC settings), scores the BC model's greedy held-out pass@1 and writes ``prepare.json``. Every RL method of
a comparison then starts from the same ``bc/`` (``model.path``) and data (``data.train`` / ``data.eval``), as in
``recipes/grpo_harder.yaml``. The seeds follow ``alignrl quickstart``: demonstrations and held-out prompts from
``seed``, RL prompts from ``seed + 1``; for ``"quickstart"`` the data files are the quickstart's, byte for byte.

Command line (one BC process; on a shared 2-core machine keep it to one thread)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python -m alignrl.tasks.prepare --task harder --out runs/harder/seed0 --seed 0
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alignrl.quickstart.tiny_model import quickstart_sft_params
from alignrl.run_dir import RunDirError
from alignrl.sft import SFTParams
from alignrl.tasks import TASKS, TaskSpecLike, get_task


@dataclass
class PrepareSettings:
    """What ``prepare_task`` runs with; written into ``prepare.json``."""

    spec: TaskSpecLike | None = None
    """The task's spec (None: the task's default, e.g. ``HarderSpec()``)."""
    model_preset: str = "quickstart"
    """``alignrl.quickstart.tiny_model.PRESETS`` entry to behaviour-clone."""
    sft: SFTParams | None = None
    """BC settings; None: the quickstart's (128 sequences a step, lr 3e-3 cosine, 800 steps) with the task's
    ``sft_overrides`` (``harder``: 1200 steps). The seed is replaced by the task seed."""
    rl_prompts: int = 8192
    """Train-split prompts written to ``data/rl_prompts.jsonl`` (disjoint from the held-out prompts)."""
    max_new_tokens: int = 16
    """Generation budget of the BC evaluation (the quickstart's GRPO setting)."""


def prepare_task(name: str, out_dir: str | Path, seed: int, settings: PrepareSettings | None = None,
                 overwrite: bool = False) -> dict[str, Any]:
    """Write ``out_dir/data/{demonstrations,rl_prompts,heldout}.jsonl``, behaviour-clone into ``out_dir/bc`` and
    evaluate it. Returns (and writes to ``out_dir/prepare.json``) the paths, ``bc_pass_at_1`` and the settings.

    A folder holding a finished preparation is kept unless ``overwrite``; an unfinished one is replaced."""
    from alignrl.quickstart.run import evaluate_model
    from alignrl.quickstart.tiny_model import build_model, build_tokenizer, count_parameters
    from alignrl.sft import run_sft

    task = get_task(name)
    settings = settings or PrepareSettings()
    spec = settings.spec if settings.spec is not None else task.default_spec()
    out = Path(out_dir)
    if (out / "prepare.json").exists() and not overwrite:
        raise RunDirError(f"{out}: holds a prepared task; pass overwrite=True (--overwrite) or another folder")
    if out.exists():
        shutil.rmtree(out)
    data = out / "data"
    data.mkdir(parents=True)
    start = time.perf_counter()

    demos = task.make_demonstrations(task.n_demonstrations(spec), seed, spec)
    paths = {"demonstrations": data / "demonstrations.jsonl", "rl_prompts": data / "rl_prompts.jsonl",
             "heldout": data / "heldout.jsonl"}
    _write_jsonl(paths["demonstrations"], demos)
    _write_jsonl(paths["rl_prompts"], task.make_prompts(settings.rl_prompts, seed + 1, "train", spec))
    _write_jsonl(paths["heldout"], task.make_prompts(task.n_heldout(spec), seed, "heldout", spec))

    tokenizer = build_tokenizer()
    model = build_model(tokenizer, settings.model_preset, seed=seed)
    base = settings.sft or quickstart_sft_params(logging_steps=100, **task.sft_overrides)
    sft = SFTParams(**{**asdict(base), "seed": seed})
    t_bc = time.perf_counter()
    run_sft(model, tokenizer, demos, out / "bc", sft)
    bc_seconds = time.perf_counter() - t_bc
    bc_eval = evaluate_model(out / "bc", paths["heldout"], settings.max_new_tokens)

    report = {
        "task": name, "seed": seed, "bc": str(out / "bc"), "data": {k: str(v) for k, v in paths.items()},
        "bc_pass_at_1": bc_eval["pass_at_1"], "bc_eval": bc_eval, "bc_final_loss": _final_loss(out / "bc"),
        "bc_seconds": bc_seconds, "wall_seconds": time.perf_counter() - start,
        "demonstrations": task.demonstration_stats(demos), "model_parameters": count_parameters(model),
        "settings": {"spec": asdict(spec), "model_preset": settings.model_preset, "sft": asdict(sft),
                     "rl_prompts": settings.rl_prompts, "max_new_tokens": settings.max_new_tokens},
    }
    (out / "prepare.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    return report


def _final_loss(bc_dir: Path) -> float | None:
    """The last logged training loss in ``trainer_state.json`` (None if there is none)."""
    try:
        history = json.loads((bc_dir / "trainer_state.json").read_text())["log_history"]
    except (OSError, KeyError, ValueError):
        return None
    losses = [entry["loss"] for entry in history if "loss" in entry]
    return losses[-1] if losses else None


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", required=True, choices=sorted(TASKS))
    parser.add_argument("--out", required=True, help="output folder (data/, bc/, prepare.json)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--overwrite", action="store_true", help="replace a finished preparation in --out")
    args = parser.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    report = prepare_task(args.task, args.out, args.seed, overwrite=args.overwrite)
    print(json.dumps({k: report[k] for k in ("task", "seed", "bc", "bc_pass_at_1", "bc_final_loss", "bc_seconds",
                                             "demonstrations")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
