"""Run by ``accelerate launch`` in test_distributed.py: train, then every rank writes a hash of its parameters."""

from __future__ import annotations

import hashlib
import json
import os
import sys

from alignrl.config import load_config
from alignrl.loop import train


def write_parameter_hash(step, components, metrics) -> None:
    if step != components.config.trainer.max_steps:
        return
    digest = hashlib.sha256()
    for name, tensor in sorted(components.learner.unwrapped.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    with open(f"{os.environ['ALIGNRL_TEST_RECORD']}.params{components.accelerator.process_index}", "w") as handle:
        json.dump({"sha256": digest.hexdigest(), "world": components.accelerator.num_processes,
                   "reward_mean": metrics["reward_mean"]}, handle)


if __name__ == "__main__":
    train(load_config(sys.argv[1], sys.argv[2:]), callbacks=[write_parameter_hash])
