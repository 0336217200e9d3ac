"""Every shipped recipe is valid against the schema (local paths swapped for test fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from alignrl.config import load_config
from alignrl.sft_recipe import load_sft_config

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


@pytest.mark.parametrize("recipe", sorted(p.name for p in RECIPES.glob("*.yaml")))
def test_recipe_is_valid(recipe, tiny_model_dir, prompt_files):
    path = RECIPES / recipe
    data = yaml.safe_load(path.read_text())
    local = [f"model.path={tiny_model_dir}"] if data["model"]["path"].startswith("runs/") else []
    if str(data["model"].get("reference", "")).startswith("runs/"):
        local.append(f"model.reference={tiny_model_dir}")
    if data["data"]["train"].startswith("runs/"):
        local.append(f"data.train={prompt_files['train']}")
    if str(data["data"].get("eval", "")).startswith("runs/"):
        local.append(f"data.eval={prompt_files['eval']}")
    if "sft" in data:
        config = load_sft_config(path, local)
        assert config.sft.max_steps > 0 or config.sft.num_train_epochs > 0
    else:
        config = load_config(path, local)
        assert config.algorithm.name in ("grpo", "rloo", "p3o", "demo_kl", "oreal") and config.reward.functions


@pytest.mark.parametrize("name", ["multi_gpu.yaml", "multi_cpu.yaml"])
def test_accelerate_configs_parse(name):
    config = yaml.safe_load((RECIPES / "accelerate" / name).read_text())
    assert config["distributed_type"] == "MULTI_GPU" and config["num_processes"] >= 2
