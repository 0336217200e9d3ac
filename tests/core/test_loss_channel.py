"""One channel from algorithm to loss: per-token weights, per-sample extras and global counters reach the loss, and
the step's gradient does not depend on how the batch is split into micro-batches or over ranks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from alignrl.algorithms import ShapingInputs
from alignrl.batch import RolloutBatch
from alignrl.components import build_components
from alignrl.config import load_config
from alignrl.rewards import RewardInputs
from alignrl.rollout import SamplingParams
from rank_worker import capture_gradients

REPO = Path(__file__).resolve().parents[2]


def _recipe(base_recipe: dict, tmp_path: Path, micro_batch_size: int, name: str) -> dict:
    return {**base_recipe, "algorithm": {"name": "test_counter"}, "reward": {"functions": [{"name": "test_sevens"}]},
            "rollout": {**base_recipe["rollout"], "prompts_per_step": 4, "n": 4},
            "trainer": {**base_recipe["trainer"], "micro_batch_size": micro_batch_size,
                        "output_dir": str(tmp_path / name)}, "eval": {"every_steps": 0}}


def _shaped_batch(c) -> RolloutBatch:
    """One rollout batch of the run, scored and shaped as the loop does it."""
    from alignrl.batch import build_batch

    indices = c.sampler.next_indices()
    params = SamplingParams(n=c.config.rollout.n, max_new_tokens=c.config.rollout.max_new_tokens, seed=5)
    groups = c.engine.generate([c.prompts.token_ids[i] for i in indices], params)
    batch = build_batch([c.prompts.token_ids[i] for i in indices], groups, [c.prompts.texts[i] for i in indices],
                        [c.prompts.rows[i] for i in indices], c.tokenizer.pad_token_id)
    scored = c.rewards.score(RewardInputs(batch.prompts, batch.completions, {}, ["stop"] * batch.size,
                                          [[] for _ in range(batch.size)]))
    batch.rewards = scored.total
    batch.attach(c.algorithm.shape(ShapingInputs(
        rewards=batch.rewards.view(-1, batch.group_size), mask=batch.completion_mask,
        sampler_logp=batch.sampler_logp, prompt_index=torch.tensor(indices))))
    assert 0 < float(batch.per_sample["positive"].sum()) < batch.size, "want positives and negatives"
    return batch


def _gradients(base_recipe, tmp_path, micro_batch_size, batch=None):
    c = build_components(load_config(base=_recipe(base_recipe, tmp_path, micro_batch_size, f"mb{micro_batch_size}")))
    batch = batch if batch is not None else _shaped_batch(c)
    grads = capture_gradients(c.learner)
    c.learner.update(batch, c.algorithm, step=1, max_tokens=c.config.rollout.max_new_tokens)
    return batch, grads


def test_gradient_is_the_same_with_one_micro_batch_or_many(base_recipe, tmp_path):
    batch, whole = _gradients(base_recipe, tmp_path, micro_batch_size=16)
    _, split = _gradients(base_recipe, tmp_path, micro_batch_size=4, batch=batch)
    assert whole.keys() == split.keys() and whole
    assert max(float((whole[k] - split[k]).abs().max()) for k in whole) < 1e-6
    assert max(float(g.abs().max()) for g in whole.values()) > 1e-4, "the test needs a non-trivial gradient"


def test_counter_and_weights_reach_the_loss(base_recipe, tmp_path):
    """The gradient with counters equals autograd of the hand-written full-batch objective."""
    c = build_components(load_config(base=_recipe(base_recipe, tmp_path, 16, "hand")))
    batch = _shaped_batch(c)
    grads = capture_gradients(c.learner)
    c.learner.update(batch, c.algorithm, step=1, max_tokens=c.config.rollout.max_new_tokens)
    from alignrl.learner.forward import token_logprobs

    model = c.learner.unwrapped
    model.zero_grad()
    # the update moved the weights: restore them from the gradients' point by rebuilding the components
    c2 = build_components(load_config(base=_recipe(base_recipe, tmp_path, 16, "hand2")))
    logp, _ = token_logprobs(c2.learner.unwrapped, batch, temperature=1.0)
    mask, positive = batch.completion_mask, batch.per_sample["positive"][:, None]
    per_tok = -logp * batch.advantages[:, None] * batch.token_weights * mask
    pos_tokens = float((mask.sum(-1) * batch.per_sample["positive"]).sum())
    neg_tokens = float(mask.sum()) - pos_tokens
    objective = 2.0 * (per_tok * positive).sum() / pos_tokens + (per_tok * (1 - positive)).sum() / neg_tokens
    objective.backward()
    for name, param in c2.learner.unwrapped.named_parameters():
        torch.testing.assert_close(grads[name], param.grad, atol=1e-6, rtol=1e-5)


def _launch(args: list[str], port: int) -> None:
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "tests" / "core")])}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", str(port), str(REPO / "tests" / "core" / "rank_worker.py"), *args]
    # a session of its own, so a hung launch is killed with every rank it started (no orphans eating the CPU)
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    try:
        stdout, stderr = process.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail("the 2-process launch hung for 300 s: " + stderr[-4000:])
    assert process.returncode == 0, stdout[-2000:] + stderr[-4000:]


def test_gradient_is_the_same_on_one_rank_or_two(base_recipe, tmp_path):
    batch, single = _gradients(base_recipe, tmp_path, micro_batch_size=4)
    torch.save(batch, tmp_path / "batch.pt")
    recipe = tmp_path / "two.yaml"
    recipe.write_text(yaml.safe_dump(_recipe(base_recipe, tmp_path, 4, "two")))
    _launch(["grads", str(recipe), str(tmp_path / "batch.pt"), str(tmp_path / "grads.pt")], port=29531)
    double = torch.load(tmp_path / "grads.pt")
    assert single.keys() == double.keys()
    assert max(float((single[k] - double[k]).abs().max()) for k in single) < 1e-6


def test_a_rank_with_every_sample_filtered_out_matches_one_process(base_recipe, tmp_path):
    """Rank 1 gets only odd prompts, all dropped: it runs zero-weight passes and the run matches one process."""
    recipe = {**base_recipe, "algorithm": {"name": "test_even_prompts"},
              "reward": {"functions": [{"name": "test_sevens"}]},
              "data": {**base_recipe["data"], "shuffle": False},
              "rollout": {**base_recipe["rollout"], "engine": {"name": "test_per_prompt"}, "prompts_per_step": 4},
              "trainer": {**base_recipe["trainer"], "max_steps": 3, "save_steps": 0, "micro_batch_size": 4,
                          "max_grad_norm": 0.0},
              "eval": {"every_steps": 0}}
    outputs = {}
    for world, port in ((1, None), (2, 29533)):
        path = tmp_path / f"w{world}.yaml"
        path.write_text(yaml.safe_dump({**recipe, "trainer": {**recipe["trainer"],
                                                              "output_dir": str(tmp_path / f"run{world}")}}))
        if world == 1:
            subprocess.run([sys.executable, str(REPO / "tests" / "core" / "rank_worker.py"), "train", str(path),
                            str(tmp_path / "w1")], check=True, cwd=REPO, timeout=600, env={
                **os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "tests"), str(REPO / "tests" / "core")])})
        else:
            _launch(["train", str(path), str(tmp_path / "w2")], port)
        outputs[world] = torch.load(tmp_path / f"w{world}.rank0", weights_only=False)
    rank1 = torch.load(tmp_path / "w2.rank1", weights_only=False)
    one, two = outputs[1]["params"], outputs[2]["params"]
    assert all(torch.equal(two[k], rank1["params"][k]) for k in two), "ranks diverged"
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-6
    # metrics reduced by kind: a std over all samples (not a mean of per-rank stds), a max, a mean
    for key in ("reward_mean", "reward_std", "response_length_max", "response_length"):
        assert outputs[1]["metrics"][key] == pytest.approx(outputs[2]["metrics"][key], abs=1e-6), key
