"""Test doubles for the DeepSpeed and Slurm tests (registered on import).

- ``test_step_seeded`` engine: for comparing runs across process counts *and* across a resume. Each prompt is
  sampled alone, seeded by its tokens and the policy's weight version (the step it was trained to), so the same
  prompt at the same step gets the same completions however prompts are split over ranks and whether or not the
  run was restarted.
- ``test_parity`` reward: +1 for an even number of characters, -1 otherwise, so about half of each group is
  "correct" even for an untrained model (OREAL keeps only groups with both).
"""

from __future__ import annotations

import dataclasses
import zlib

from alignrl.rewards import register_reward
from alignrl.rollout import register_engine
from alignrl.rollout.hf_engine import HFEngine, HFEngineSettings


class StepSeededEngine(HFEngine):
    def generate(self, prompts, params):
        out = []
        for prompt in prompts:
            seed = zlib.crc32(bytes(str((prompt, self.weights_version)), "utf8"))
            out.extend(super().generate([prompt], dataclasses.replace(params, seed=seed)))
        return out


@register_engine("test_step_seeded", settings=HFEngineSettings)
def _build(settings, *, model=None, tokenizer=None, **_):
    return StepSeededEngine.from_model(model, tokenizer, settings)


@register_reward("test_parity")
def parity(prompts, completions, **_):
    return [1.0 if len(c) % 2 == 0 else -1.0 for c in completions]
