"""Recipes -> typed configs: overrides, and errors that name the file, the key and what was expected."""

from __future__ import annotations

import pytest
import yaml

from alignrl.config import ConfigError, load_config, read_yaml, save_config


def write_recipe(tmp_path, recipe: dict):
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_recipe_loads_into_typed_sections(base_recipe, tmp_path):
    config = load_config(write_recipe(tmp_path, base_recipe))
    assert config.rollout.n == 4 and isinstance(config.trainer.lr, float)
    assert config.algorithm.name == "grpo" and config.algorithm.params.clip_eps == 0.2
    assert config.reward.functions[0].name == "test_length"


def test_dotted_overrides_are_typed(base_recipe, tmp_path):
    config = load_config(write_recipe(tmp_path, base_recipe),
                         ["trainer.lr=1e-6", "rollout.n=8", "algorithm.kl_coef=0.05", 'rollout.stop=["\\n"]'])
    assert config.trainer.lr == 1e-6 and config.rollout.n == 8
    assert config.algorithm.params.kl_coef == 0.05 and config.rollout.stop == ["\n"]


def test_unknown_key_names_file_and_key(base_recipe, tmp_path):
    base_recipe["trainer"]["learning_rate"] = 1e-5
    path = write_recipe(tmp_path, base_recipe)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert str(path) in message and "trainer.learning_rate" in message and "lr" in message


def test_unknown_override_key(base_recipe, tmp_path):
    with pytest.raises(ConfigError, match=r"rollout\.samples.*unknown key"):
        load_config(write_recipe(tmp_path, base_recipe), ["rollout.samples=4"])


def test_wrong_type_names_key_and_expectation(base_recipe, tmp_path):
    base_recipe["rollout"]["n"] = "eight"
    with pytest.raises(ConfigError, match=r"rollout\.n.*expected an integer, got 'eight'"):
        load_config(write_recipe(tmp_path, base_recipe))


def test_invalid_value_is_reported(base_recipe, tmp_path):
    with pytest.raises(ConfigError, match=r"algorithm.*clip_eps"):
        load_config(write_recipe(tmp_path, base_recipe), ["algorithm.clip_eps=-1"])


def test_unknown_algorithm_lists_registered(base_recipe, tmp_path):
    with pytest.raises(ConfigError, match=r"algorithm\.name.*unknown algorithm 'ppo'.*grpo.*rloo"):
        load_config(write_recipe(tmp_path, base_recipe), ["algorithm.name=ppo"])


def test_algorithm_specific_keys_are_checked(base_recipe, tmp_path):
    base_recipe["algorithm"] = {"name": "rloo", "scale_rewards": False}  # a GRPO-only option
    with pytest.raises(ConfigError, match=r"algorithm\.scale_rewards.*unknown key"):
        load_config(write_recipe(tmp_path, base_recipe))


def test_missing_required_key(base_recipe, tmp_path):
    del base_recipe["model"]
    with pytest.raises(ConfigError, match=r"'model'.*required key is missing"):
        load_config(write_recipe(tmp_path, base_recipe))


def test_missing_recipe_file(tmp_path):
    with pytest.raises(ConfigError, match="recipe file not found"):
        load_config(tmp_path / "nope.yaml")


def test_missing_model_and_data_files(base_recipe, tmp_path):
    path = write_recipe(tmp_path, base_recipe)
    with pytest.raises(ConfigError, match=r"model\.path.*model folder not found"):
        load_config(path, [f"model.path={tmp_path}/no-model"])
    with pytest.raises(ConfigError, match=r"data\.train.*data file not found"):
        load_config(path, ["data.train=missing.jsonl"])


def test_malformed_override():
    with pytest.raises(ConfigError, match="section.key=value"):
        load_config(base={}, overrides=["trainer.lr"])


def test_resolved_config_round_trips(base_recipe, tmp_path):
    config = load_config(write_recipe(tmp_path, base_recipe), ["algorithm.kl_coef=0.1"])
    save_config(config, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again == config
    assert read_yaml(tmp_path / "resolved.yaml")["algorithm"]["kl_coef"] == 0.1


@pytest.mark.parametrize("override, key, message", [
    ("rollout.engine=nope", "rollout.engine.name", "unknown rollout engine 'nope'; registered: .*hf"),
    ("rollout.engine={name: hf, bogus: 1}", "rollout.engine.bogus", "accepts: generation_batch_size"),
    ("data.sampler={name: nope}", "data.sampler.name", "unknown prompt sampler 'nope'"),
])
def test_engine_and_sampler_sections_are_checked(base_recipe, override, key, message):
    with pytest.raises(ConfigError, match=message) as err:
        load_config(base=base_recipe, overrides=[override])
    assert err.value.key == key


def test_engine_section_takes_a_bare_name_or_settings(base_recipe):
    config = load_config(base=base_recipe, overrides=["rollout.engine={name: hf, generation_batch_size: 4}"])
    assert config.rollout.engine.name == "hf" and config.rollout.engine.params.generation_batch_size == 4
    assert load_config(base=base_recipe, overrides=["rollout.engine=hf"]).rollout.engine.params.share_weights
