"""The README's "Add an algorithm" and "Add a reward" examples run as printed and train."""

from __future__ import annotations

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


def test_readme_examples_register_and_train(base_recipe):
    for index, code in enumerate(_examples()):
        module = types.ModuleType(f"readme_example_{index}")
        sys.modules[module.__name__] = module  # dataclasses look their module up
        exec(compile(code, str(README), "exec"), module.__dict__)
    overrides = ["algorithm={name: signed_bc, negative_factor: 0.3}", "trainer.max_steps=3", "trainer.save_steps=1",
                 "reward.functions=[{name: test_sevens}, {name: shorter_than_average, weight: 0.1, "
                 "kwargs: {momentum: 0.8}}]", "eval.every_steps=0"]
    run = train(load_config(base=base_recipe, overrides=overrides))
    records = read_metrics(run / "metrics.jsonl")
    assert len(records) == 3 and "positive_share" in records[0] and "reward/shorter_than_average/length" in records[0]
    state = torch.load(run / "checkpoint-000003" / "state_0.pt", weights_only=False)
    assert state["rewards"]["shorter_than_average"]["average"] > 0
