"""The job scripts in slurm/ on a real one-node Slurm (munged, slurmctld, slurmd started for the test).

The multi-node script runs as a two-task job (two `accelerate launch`es, one rank each, as on two nodes), ZeRO-3
on CPU. Mid-run the batch script gets the preemption warning (what ``--signal=B:USR1@120`` delivers ahead of a
time limit); it forwards it to the trainer, which saves and stops; the job requeues itself and the rerun resumes
with ``--resume auto``. It must end with the same weights as an uninterrupted job of the single-node script
(one launcher, two ranks): same ranks, same data, same reduction order, so bit-identical.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alignrl.checkpoint_manifest import checkpoint_problem
from ds_launch import REPO, free_port, launch_env
from slurm_cluster import SlurmCluster, missing

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("deepspeed_ready")]

STEPS = 10


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    reason = missing()
    if reason is not None:
        if os.environ.get("ALIGNRL_REQUIRE_SLURM") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm"), cpus=max(2, os.cpu_count() or 2))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def edit_header(script: Path, out: Path, **options: str | None) -> Path:
    """What a user does: set (or, with None, delete) ``#SBATCH --<option>`` lines of the script's header."""
    text = script.read_text()
    for option, value in options.items():
        pattern = re.compile(rf"^#SBATCH --{option.replace('_', '-')}=.*\n", re.MULTILINE)
        assert pattern.search(text), f"{script} has no #SBATCH --{option}"
        text = pattern.sub("" if value is None else f"#SBATCH --{option.replace('_', '-')}={value}\n", text)
    out.write_text(text)
    return out


def job_env(**header: str) -> dict[str, str]:
    """The submitting shell: this Python's tools first on PATH, the test rewards importable, header variables."""
    env = launch_env(**header)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return env


def wait_for_steps(run: Path, count: int, timeout: float) -> None:
    deadline = time.time() + timeout
    metrics = run / "metrics.jsonl"
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= count:
            return
        time.sleep(0.2)
    raise TimeoutError(f"{metrics}: fewer than {count} steps after {timeout:.0f} s")


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    checkpoint = run / f"checkpoint-{STEPS:06d}"
    assert checkpoint_problem(checkpoint) is None, checkpoint
    return load_file(checkpoint / "model.safetensors")


def test_requeued_two_task_job_ends_like_an_uninterrupted_one(cluster, tiny_model_dir, prompt_files, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"path": str(tiny_model_dir)}, "data": {"train": str(prompt_files["train"])},
        "rollout": {"prompts_per_step": 4, "n": 4, "max_new_tokens": 12},
        "algorithm": {"name": "grpo", "kl_coef": 0.05},
        "reward": {"functions": [{"name": "rewards_for_tests:short_is_good"}]},
        "trainer": {"max_steps": STEPS, "save_steps": 4, "lr": 1e-2, "micro_batch_size": 8, "seed": 0},
        "eval": {"every_steps": 0}, "logging": {"progress_bar": False}}))
    logs = tmp_path / "logs"
    logs.mkdir()
    common = dict(partition="debug", gpus_per_node=None, time="20", output=f"{logs}/%x-%j.out")
    single = edit_header(REPO / "slurm" / "train_single_node.sbatch", tmp_path / "single.sbatch", **common,
                         cpus_per_task="2")
    multi = edit_header(REPO / "slurm" / "train.sbatch", tmp_path / "multi.sbatch", **common, nodes="1",
                        ntasks_per_node="2", cpus_per_task="1")
    header = dict(RECIPE=str(recipe), ACCELERATE_CONFIG="recipes/accelerate/zero3.yaml", VENV="")

    whole_run, requeued_run = tmp_path / "whole", tmp_path / "requeued"
    whole = cluster.sbatch(str(single), f"trainer.output_dir={whole_run}", cwd=REPO,
                           env=job_env(**header, GPUS_PER_NODE="2", MASTER_PORT=str(free_port())))
    record = cluster.wait(whole, ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT"), timeout=900)
    whole_log = (logs / f"alignrl-{whole}.out").read_text(errors="replace")
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", whole_log[-4000:]

    job = cluster.sbatch(str(multi), f"trainer.output_dir={requeued_run}", cwd=REPO,
                         env=job_env(**header, GPUS_PER_NODE="1", MASTER_PORT=str(free_port())))
    log = logs / f"alignrl-{job}.out"
    wait_for_steps(requeued_run, 2, timeout=600)
    cluster.signal_batch(job, "USR1")  # the preemption warning, as --signal=B:USR1@120 sends it
    deadline = time.time() + 900
    while True:
        record = cluster.job(job)
        if record["JobState"] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") and record["Restarts"] != "0":
            break
        assert time.time() < deadline, f"job {job} still {record['JobState']}:\n{log.read_text()[-4000:]}"
        time.sleep(0.5)
    text = log.read_text(errors="replace")
    assert record["JobState"] == "COMPLETED" and record["ExitCode"] == "0:0", text[-4000:]
    assert record["Restarts"] == "1", text[-4000:]
    assert "USR1 received" in text and "preempted; requeueing job" in text and "restart 1:" in text, text[-4000:]
    assert "alignrl train: preempted: stopped on SIGUSR1" in text, text[-4000:]

    steps = [json.loads(line)["step"] for line in (requeued_run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, STEPS + 1)), steps  # resumed after the preemption checkpoint, no step twice
    stopped = int(re.search(r"stopped on SIGUSR1 after step (\d+)", text).group(1))
    assert stopped < STEPS, "the run finished before the warning reached it"
    ours, theirs = final_weights(requeued_run), final_weights(whole_run)
    assert sorted(ours) == sorted(theirs)
    assert all(torch.equal(ours[k], theirs[k]) for k in ours), "the requeued job ended with other weights"
    start = load_file(Path(tiny_model_dir) / "model.safetensors")
    assert any(not torch.equal(ours[k], start[k]) for k in ours if k in start), "the weights never moved"
