"""DeepSpeed ZeRO-2 and ZeRO-3 learners: two CPU processes (gloo) under ``accelerate launch`` with the configs in
recipes/accelerate/, against one process on the same data, and a ZeRO-3 run killed and resumed.

Tolerances: per-step losses and gradient norms agree with the one-process run to 1e-5 + 1e-4 x |value| (the same
float32 sums in another order: sharded reduce-scatters instead of one process's sums), and parameters to 1e-4
after 4 steps at lr 1e-3 (Adam divides each update by the root of its own squared-gradient average, so rounding
noise in near-zero gradient entries moves those weights by up to a fraction of lr). Both ranks hold bit-identical
parameters, and a resumed run ends bit-identical to an uninterrupted one (same ranks, same reduction order).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from alignrl.checkpoint import list_checkpoints
from alignrl.checkpoint_manifest import checkpoint_problem
from ds_launch import kill, launch_env, run, single, start, tail, two_ranks

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("deepspeed_ready")]

OREAL = {"name": "oreal", "actor_freeze_steps": 1, "token_rm_lr": 1e-2, "token_rm_warmup_steps": 0}


@dataclass
class Run:
    folder: Path
    records: list[dict]  # per rank: {"params": {model: state}, "metrics", "world", "distributed_type"}

    @property
    def metrics(self) -> list[dict]:
        return [json.loads(line) for line in (self.folder / "metrics.jsonl").read_text().splitlines()]

    @property
    def params(self) -> dict[str, dict[str, torch.Tensor]]:
        return self.records[0]["params"]

    def checkpoint(self, step: int) -> Path:
        return self.folder / f"checkpoint-{step:06d}"


class Runs:
    """Runs of the module's recipe by name, each run once and shared by the tests that compare with it."""

    def __init__(self, root: Path, recipe: dict):
        self.root, self.recipe, self.done = root, recipe, {}

    def write_recipe(self, name: str, algorithm: dict | None = None) -> Path:
        recipe = {**self.recipe, "trainer": {**self.recipe["trainer"], "output_dir": str(self.root / name)}}
        if algorithm is not None:
            recipe["algorithm"] = algorithm
        path = self.root / f"{name}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        return path

    def command(self, name: str, config: str | None, algorithm: dict | None = None) -> list[str]:
        args = [str(self.write_recipe(name, algorithm)), str(self.root / name / "record")]
        return single(args) if config is None else two_ranks(config, args)

    def result(self, name: str, ranks: int) -> Run:
        folder = self.root / name
        return Run(folder, [torch.load(folder / f"record.rank{r}", weights_only=False) for r in range(ranks)])

    def __call__(self, name: str, config: str | None = None, algorithm: dict | None = None) -> Run:
        if name not in self.done:
            run(self.command(name, config, algorithm), self.root / f"{name}.log")
            self.done[name] = self.result(name, 1 if config is None else 2)
        return self.done[name]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, ds_recipe) -> Runs:
    return Runs(tmp_path_factory.mktemp("zero"), ds_recipe)


def assert_steps_match(one: Run, two: Run, keys: tuple[str, ...]) -> None:
    rows_one, rows_two = one.metrics, two.metrics
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two] == [1, 2, 3, 4]
    for a, b in zip(rows_one, rows_two):
        assert a["reward_mean"] == b["reward_mean"], "the runs did not see the same completions"
        for key in keys:
            assert key in a and key in b, f"step {a['step']}: no {key}"
            assert abs(a[key] - b[key]) <= 1e-5 + 1e-4 * abs(a[key]), (a["step"], key, a[key], b[key])
    assert any(abs(r[keys[0]]) > 1e-3 for r in rows_one), "the test needs non-trivial losses"


def assert_ranks_identical_and_close(one: Run, two: Run) -> None:
    assert two.records[0]["distributed_type"] == "DistributedType.DEEPSPEED" and two.records[0]["world"] == 2
    for model, params in two.params.items():
        other = two.records[1]["params"][model]
        assert all(torch.equal(params[k], other[k]) for k in params), f"{model}: ranks hold different parameters"
        reference = one.params[model]
        assert sorted(params) == sorted(reference)
        gap = max(float((params[k] - reference[k]).abs().max()) for k in params)
        assert gap <= 1e-4, f"{model}: parameters differ from one process by {gap:.2e}"


def shard_files(checkpoint: Path) -> set[str]:
    return {p.name for p in (checkpoint / "deepspeed" / "state").iterdir()}


def test_zero3_two_ranks_match_one_process(runs):
    """GRPO with the exact KL (rank 1 filtered empty), the reference a ZeRO-3 inference engine, generation on the
    sharded policy; the checkpoint holds each rank's shards and a consolidated folder that transformers loads."""
    one, two = runs("one"), runs("zero3", "zero3.yaml")
    assert_steps_match(one, two, ("loss", "grad_norm"))
    assert_ranks_identical_and_close(one, two)
    checkpoint = two.checkpoint(4)
    assert checkpoint_problem(checkpoint) is None
    assert {f"zero_pp_rank_{r}_mp_rank_00_{kind}_states.pt" for r in (0, 1) for kind in ("model", "optim")} \
        <= shard_files(checkpoint)  # parameters and optimiser state sharded: each rank saved its own part
    # 3 evaluation prompts over 2 ranks (2 + 1, padded to 2 + 2: no deadlock), every sample counted once
    assert two.metrics[-1]["eval/pass_at_1"] * 6 == pytest.approx(round(two.metrics[-1]["eval/pass_at_1"] * 6))
    # a rank allowed 2 tokens and one allowed 8 generated together (synced ranks: no deadlock)
    assert two.records[0]["uneven_length"] <= 2 < two.records[1]["uneven_length"]
    # the consolidated Hugging Face folder at the checkpoint root loads in transformers as it is
    from transformers import AutoModelForCausalLM

    state = AutoModelForCausalLM.from_pretrained(checkpoint).state_dict()
    assert all(torch.equal(state[k], v) for k, v in two.params["policy"].items())


def test_zero2_with_an_auxiliary_model_matches_one_process(runs):
    """OREAL: the policy and the co-trained token-level RM, each its own ZeRO-2 engine with its own lr and
    clipping, and the KL reference as an unsharded inference engine; the RM trains alone at step 1, then both."""
    one, two = runs("oreal_one", algorithm=OREAL), runs("oreal_zero2", "zero2.yaml", algorithm=OREAL)
    assert_steps_match(one, two, ("aux/token_rm/loss", "aux/token_rm/grad_norm"))
    assert_steps_match(one, two, ("aux/token_rm/lr",))
    rows = [r for r in one.metrics if r["step"] > 1]
    for a, b in zip(rows, [r for r in two.metrics if r["step"] > 1]):  # the policy trains from step 2
        assert abs(a["loss"] - b["loss"]) <= 1e-5 + 1e-4 * abs(a["loss"]), (a["step"], a["loss"], b["loss"])
    assert set(two.params) == {"policy", "token_rm"}
    assert_ranks_identical_and_close(one, two)
    for folder in (two.checkpoint(4), two.checkpoint(4) / "token_rm"):  # optimiser state sharded per model
        assert {f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)} <= shard_files(folder)
    assert checkpoint_problem(two.checkpoint(4)) is None


def test_zero3_killed_and_resumed_ends_bit_identical(runs):
    """SIGKILL every process of a ZeRO-3 run after its step-2 checkpoint; ``--resume auto`` restarts from it and
    ends with the same consolidated weights and shards' parameters as the uninterrupted run."""
    whole = runs("zero3", "zero3.yaml")
    name = "zero3_killed"
    command = runs.command(name, "zero3.yaml")
    log = runs.root / f"{name}.log"
    process = start(command, log, launch_env(ALIGNRL_TEST_STEP_SLEEP="3"))  # a window after each step
    deadline = time.time() + 600
    try:
        while time.time() < deadline and process.poll() is None and not list_checkpoints(runs.root / name):
            time.sleep(0.05)
        assert process.poll() is None, "the run ended before it could be killed:\n" + tail(log)
        assert [p.name for p in list_checkpoints(runs.root / name)] == ["checkpoint-000002"], tail(log)
    finally:
        kill(process)
    run(command, runs.root / f"{name}.resumed.log")
    resumed = runs.result(name, 2)
    assert resumed.records[0]["steps"] == resumed.records[1]["steps"] == [3, 4], "it did not resume at step 3"
    for model, params in whole.params.items():
        assert all(torch.equal(params[k], resumed.params[model][k]) for k in params), f"{model} differs"
    ours, theirs = load_file(resumed.checkpoint(4) / "model.safetensors"), load_file(whole.checkpoint(4) /
                                                                                     "model.safetensors")
    assert sorted(ours) == sorted(theirs) and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert checkpoint_problem(resumed.checkpoint(4)) is None
    assert [r["step"] for r in resumed.metrics] == [1, 2, 3, 4]  # steps 3-4 logged once, after the resume
