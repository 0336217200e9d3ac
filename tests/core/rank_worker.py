"""Run by ``accelerate launch`` from the core tests (2 CPU processes).

    rank_worker.py grads RECIPE BATCH OUT   # this rank's share of a saved batch -> one update -> rank 0 saves grads
    rank_worker.py train RECIPE OUT          # a training run -> every rank saves its final parameters
"""

from __future__ import annotations

import sys

import torch

import doubles  # noqa: F401  (registers the test doubles)
import rewards_for_tests  # noqa: F401  (registers the test rewards)
from alignrl.components import build_components
from alignrl.config import load_config
from alignrl.loop import train


def capture_gradients(learner) -> dict[str, torch.Tensor]:
    """Patch the policy's optimiser step to keep a copy of the gradients it steps with."""
    grads: dict[str, torch.Tensor] = {}
    policy = learner.policy
    original = policy.step

    def step() -> float:
        for name, param in policy.unwrapped.named_parameters():
            if param.grad is not None:
                grads[name] = param.grad.detach().clone()
        return original()

    policy.step = step
    return grads


def grads_mode(recipe: str, batch_file: str, out: str) -> None:
    c = build_components(load_config(recipe))
    batch = torch.load(batch_file, weights_only=False)
    acc = c.accelerator
    groups = list(range(batch.num_groups))[acc.process_index::acc.num_processes]
    mine = batch.select([g * batch.group_size + k for g in groups for k in range(batch.group_size)])
    grads = capture_gradients(c.learner)
    c.learner.update(mine, c.algorithm, step=1, max_tokens=c.config.rollout.max_new_tokens)
    if acc.is_main_process:
        torch.save(grads, out)


def train_mode(recipe: str, out: str) -> None:
    def save_parameters(step, components, metrics) -> None:
        if step == components.config.trainer.max_steps:
            state = {k: v.detach().clone() for k, v in components.learner.unwrapped.state_dict().items()}
            torch.save({"params": state, "metrics": metrics}, f"{out}.rank{components.accelerator.process_index}")

    train(load_config(recipe), callbacks=[save_parameters])


if __name__ == "__main__":
    if sys.argv[1] == "grads":
        grads_mode(*sys.argv[2:5])
    else:
        train_mode(*sys.argv[2:4])
