"""Run by the DeepSpeed tests, alone (one process) or under ``accelerate launch``:

    ds_worker.py RECIPE OUT [section.key=value ...]

Trains (``--resume auto``); after the last step every rank writes ``OUT.rank<r>``: the full parameters of every
trainable model (gathered from the ZeRO-3 shards on each rank), the last step's metrics, the steps this process
ran, and the length of a greedy completion it was allowed 2 + 6 x rank tokens for (ranks of different lengths). With
``ALIGNRL_TEST_STEP_SLEEP=<seconds>`` every step ends with that pause (a window to kill the run in).
"""

from __future__ import annotations

import os
import sys
import time

import torch

import doubles  # noqa: F401  (registers the test doubles)
import rewards_for_tests  # noqa: F401  (registers the test rewards)
import ds_doubles  # noqa: F401  (registers the test_step_seeded engine and the test_parity reward)
from alignrl.config import load_config
from alignrl.learner.zero import gathered_state
from alignrl.loop import train
from alignrl.rollout import SamplingParams


def main(recipe: str, out: str, overrides: list[str]) -> None:
    steps: list[int] = []

    def record(step, components, metrics) -> None:
        steps.append(step)
        time.sleep(float(os.environ.get("ALIGNRL_TEST_STEP_SLEEP", "0")))
        if step != components.config.trainer.max_steps:
            return
        params = {name: gathered_state(model.unwrapped, keep=True)
                  for name, model in components.learner.models.items()}
        rank = components.accelerator.process_index
        # uneven lengths: rank r may generate 2 + 6r tokens (ZeRO-3 must keep every rank stepping until all finish)
        uneven = components.engine.generate([components.prompts.token_ids[0]], SamplingParams(
            n=1, temperature=0.0, max_new_tokens=2 + 6 * rank))
        torch.save({"params": params, "metrics": metrics, "steps": steps, "world": components.accelerator.num_processes,
                    "distributed_type": str(components.accelerator.distributed_type),
                    "uneven_length": len(uneven[0][0].token_ids)},
                   f"{out}.rank{components.accelerator.process_index}")

    train(load_config(recipe, overrides), resume="auto", callbacks=[record])


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3:])
