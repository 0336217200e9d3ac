"""The README's "Add an algorithm" and "Add a reward" examples run as printed and train."""

from __future__ import annotations

import functools
import re
import sys
import types
from pathlib import Path

import torch

from alignrl.config import load_config
from alignrl.logging.metrics import read_metrics
from alignrl.loop import train

README = Path(__file__).resolve().parents[1] / "README.md"


def _examples() -> list[str]:
    text = README.read_text()
    blocks = []
    for section in ("## Add an algorithm", "## Add a reward"):
        body = text[text.index(section):]
        blocks.append(re.search(r"```python\n(.*?)```", body, re.S).group(1))
    return blocks


@functools.cache
def _register_examples() -> None:
    """Run the README's code blocks once per session (they register an algorithm and a reward)."""
    for index, code in enumerate(_examples()):
        module = types.ModuleType(f"readme_example_{index}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(code, str(README), "exec"), module.__dict__)


def test_readme_examples_register_and_train(base_recipe):
    _register_examples()
    overrides = ["algorithm={name: mini_p3o, clip_eps: 0.1}", "trainer.max_steps=3", "trainer.save_steps=1",
                 "reward.functions=[{name: test_sevens}, {name: shorter_than_average, weight: 0.1, "
                 "kwargs: {momentum: 0.8}}]", "eval.every_steps=0"]
    run = train(load_config(base=base_recipe, overrides=overrides))
    records = read_metrics(run / "metrics.jsonl")
    assert len(records) == 3 and "pairs_in_micro_batch" in records[0] and "reward/shorter_than_average/length" in records[0]
    state = torch.load(run / "checkpoint-000003" / "state_0.pt", weights_only=False)
    assert state["rewards"]["shorter_than_average"]["average"] > 0


def test_readme_p3o_equals_the_library_p3o_v1():
    from alignrl.algorithms import PolicyInputs, algorithm_class
    from alignrl.algorithms.p3o import P3O, P3OParams

    _register_examples()
    g = torch.Generator().manual_seed(0)
    group_ids = torch.tensor([0, 0, 0, 1, 1])
    mask = (torch.arange(6)[None] < torch.tensor([6, 3, 5, 2, 6])[:, None]).double()
    logp = (-torch.rand(5, 6, generator=g, dtype=torch.float64)).requires_grad_(True)
    old = logp.detach() + 0.1 * torch.randn(5, 6, generator=g, dtype=torch.float64)
    rewards = torch.tensor([1.0, 0.0, 0.5, 0.0, 1.0], dtype=torch.float64)
    inputs = PolicyInputs(logp=logp, old_logp=old, mask=mask, advantages=torch.zeros(5), rewards=rewards,
                          group_size=3, num_tokens=float(mask.sum()), num_sequences=5.0, max_tokens=6,
                          group_ids=group_ids, counts={"pairs": 4.0},
                          per_sample={"reward": rewards, "shaped_reward": rewards})
    mini, _ = algorithm_class("mini_p3o")(algorithm_class("mini_p3o").Params(clip_eps=0.1)).loss(inputs)
    full, _ = P3O(P3OParams(variant="sep", clip_eps=0.1)).loss(inputs)
    torch.testing.assert_close(mini, full)
