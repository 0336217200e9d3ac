"""Memory per rank and step time of DDP, ZeRO-2, ZeRO-3 and ZeRO-3 with CPU offload: two CPU processes (gloo).

    python benchmarks/bench_zero.py --model /work/cache/smollm2-135m --steps 4 --out runs/bench_zero

Each configuration is one ``accelerate launch`` of this file (``--worker``) with recipes/accelerate/<config>.yaml:
GRPO on the built-in addition prompts with the math reward, float32, the same recipe for all. Every rank reports
the bytes of the parameters it holds (its ZeRO-3 shards, or the whole model), of the optimiser state it holds
(Adam moments plus DeepSpeed's float32 partition), its resident memory after set-up and its peak resident memory
over the run (``ru_maxrss``, which includes loading), and the wall time of steps 2..N. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = {"DDP": "multi_cpu.yaml", "ZeRO-2": "zero2.yaml", "ZeRO-3": "zero3.yaml",
           "ZeRO-3 + offload": "zero3_offload.yaml"}
MB = 2**20


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024


def held_bytes(model) -> tuple[int, int]:
    """(parameter bytes this rank holds, optimiser-state bytes this rank holds) of one TrainableModel."""
    from alignrl.learner.zero import base_optimizer

    params = list(model.unwrapped.parameters())
    param_bytes = sum((p.ds_tensor if hasattr(p, "ds_tensor") else p).numel() * p.element_size() for p in params)
    own = {p.data_ptr() for p in params}
    optimizer = base_optimizer(model.optimizer) if model.deepspeed else model.optimizer.optimizer
    tensors = [t for state in optimizer.state.values() for t in state.values() if hasattr(t, "numel")]
    tensors += [p for group in optimizer.param_groups for p in group["params"] if p.data_ptr() not in own]
    return param_bytes, sum(t.numel() * t.element_size() for t in tensors)


def worker(recipe: str, out: str) -> None:
    from alignrl.config import load_config
    from alignrl.loop import train

    marks: list[float] = []
    setup: dict[str, float] = {}

    def record(step, components, metrics) -> None:
        marks.append(time.perf_counter())
        if step == 1:
            setup["rss_after_step1_mb"] = rss_mb()
        if step != components.config.trainer.max_steps:
            return
        param_bytes, optim_bytes = held_bytes(components.learner.policy)
        steps = [b - a for a, b in zip(marks[:-1], marks[1:])]
        rank = components.accelerator.process_index
        Path(f"{out}.rank{rank}").write_text(json.dumps({
            "params_mb": param_bytes / MB, "optimizer_mb": optim_bytes / MB, **setup,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "seconds_per_step": statistics.mean(steps) if steps else float("nan"),
            "world": components.accelerator.num_processes,
            "distributed_type": str(components.accelerator.distributed_type)}))

    train(load_config(recipe), callbacks=[record])


def write_inputs(out: Path, model: str, steps: int) -> dict[str, Path]:
    from alignrl.quickstart.task import make_prompts

    out.mkdir(parents=True, exist_ok=True)
    prompts = out / "prompts.jsonl"
    prompts.write_text("".join(json.dumps(row) + "\n" for row in make_prompts(64, seed=0, split="train")))
    recipes = {}
    for name in CONFIGS:
        slug = name.lower().replace(" + ", "_").replace("-", "")
        recipe = {"model": {"path": model}, "data": {"train": str(prompts), "instruction": " Answer in \\boxed{}."},
                  "rollout": {"prompts_per_step": 2, "n": 4, "max_new_tokens": 16, "temperature": 1.0},
                  "algorithm": {"name": "grpo"}, "reward": {"functions": [{"name": "math"}]},
                  "trainer": {"output_dir": str(out / slug), "overwrite_output_dir": True, "max_steps": steps,
                              "save_steps": 0, "lr": 1e-6, "micro_batch_size": 4, "mixed_precision": "no"},
                  "eval": {"every_steps": 0}, "logging": {"progress_bar": False}}
        recipes[name] = out / f"{slug}.yaml"
        recipes[name].write_text(yaml.safe_dump(recipe))
    return recipes


def launch(name: str, recipe: Path, out: Path, timeout: float) -> list[dict]:
    result_base = out / f"{recipe.stem}.result"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "DS_ACCELERATOR": "cpu"}
    if CONFIGS[name] == "multi_cpu.yaml":
        env["ACCELERATE_USE_CPU"] = "true"  # DDP on gloo (environment.md §3)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
               str(REPO / "recipes" / "accelerate" / CONFIGS[name]), "--num_processes", "2", "--num_machines", "1",
               "--mixed_precision", "no", "--main_process_port", str(29600 + list(CONFIGS).index(name)),
               str(Path(__file__).resolve()), "--worker", str(recipe), str(result_base)]
    log = out / f"{recipe.stem}.log"
    with log.open("w") as handle:
        status = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT,
                                timeout=timeout).returncode
    if status != 0:
        raise SystemExit(f"{name} failed (status {status}); see {log}:\n{log.read_text()[-3000:]}")
    return [json.loads(Path(f"{result_base}.rank{rank}").read_text()) for rank in (0, 1)]


def table(results: dict[str, list[dict]]) -> str:
    lines = ["| config | parameters held / rank (MB) | optimiser state / rank (MB) | RSS after step 1 / rank (MB) "
             "| peak RSS / rank (MB) | s / step |", "|---|---|---|---|---|---|"]
    for name, ranks in results.items():
        def both(key: str, fmt: str = ".0f") -> str:
            return " / ".join(format(r[key], fmt) for r in ranks)

        lines.append(f"| {name} | {both('params_mb')} | {both('optimizer_mb')} | {both('rss_after_step1_mb')} | "
                     f"{both('peak_rss_mb')} | {statistics.mean(r['seconds_per_step'] for r in ranks):.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="/work/cache/smollm2-135m", help="a Hugging Face model folder")
    parser.add_argument("--steps", type=int, default=4, help="steps per configuration (step 1 is not timed)")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated subset of: " + ", ".join(CONFIGS))
    parser.add_argument("--out", default="runs/bench_zero")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    parser.add_argument("--worker", nargs=2, metavar=("RECIPE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*args.worker)
        return
    out = Path(args.out).resolve()
    recipes = write_inputs(out, args.model, args.steps)
    results = {}
    for name in [c.strip() for c in args.configs.split(",")]:
        if name not in CONFIGS:
            raise SystemExit(f"--configs: unknown '{name}' (choose from {', '.join(CONFIGS)})")
        started = time.perf_counter()
        results[name] = launch(name, recipes[name], out, args.timeout)
        print(f"{name}: done in {time.perf_counter() - started:.0f} s", flush=True)
    text = table(results)
    (out / "table.md").write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
