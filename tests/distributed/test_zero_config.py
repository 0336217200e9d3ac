"""The DeepSpeed config each trainable model's engine gets (alignrl.learner.zero), without starting DeepSpeed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from alignrl.config import ConfigError
from alignrl.learner.zero import (DeepSpeedConfigError, base_optimizer, check_launch, engine_config,
                                  gathered_state, resolve_plugin_config, zero_stage)
from alignrl.quickstart.tiny_model import build_model, build_tokenizer
from alignrl.rollout.hf_engine import HFEngineSettings


def accelerator(stage: int = 3, processes: int = 2, **extra) -> SimpleNamespace:
    """What ``accelerate launch --config_file recipes/accelerate/zero<stage>.yaml`` gives the Accelerator."""
    config = {"train_batch_size": "auto", "train_micro_batch_size_per_gpu": "auto",
              "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
              "zero_optimization": {"stage": stage, "offload_optimizer": {"device": "none"},
                                    "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                                    "stage3_param_persistence_threshold": "auto"},
              "bf16": {"enabled": False}, **extra}
    return SimpleNamespace(distributed_type=DistributedType.DEEPSPEED, num_processes=processes,
                           state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(deepspeed_config=config)))


@pytest.fixture(scope="module")
def model():
    return build_model(build_tokenizer(), preset="test", seed=0)


def test_each_model_gets_its_clipping_and_no_auto_left(model):
    acc = accelerator()
    policy, aux = engine_config(acc, model, 1.0), engine_config(acc, model, 0.0)
    assert policy["gradient_clipping"] == 1.0 and aux["gradient_clipping"] == 0.0
    hidden = model.config.hidden_size
    assert policy["zero_optimization"]["reduce_bucket_size"] == hidden * hidden
    assert policy["zero_optimization"]["stage3_param_persistence_threshold"] == 10 * hidden
    # the learner marks the step boundary itself; batch sizes are bookkeeping DeepSpeed insists on
    assert (policy["gradient_accumulation_steps"], policy["train_micro_batch_size_per_gpu"],
            policy["train_batch_size"]) == (1, 1, 2)
    # the shared plugin config is filled in place too (TRL's prepare_deepspeed reads it for the reference)
    shared = acc.state.deepspeed_plugin.deepspeed_config
    assert shared["train_batch_size"] == 2 and shared["train_micro_batch_size_per_gpu"] == 1
    assert shared["gradient_clipping"] == "auto", "one model's clipping must not leak into the shared config"


def test_a_config_that_sets_the_optimiser_is_refused_naming_the_key():
    acc = accelerator(optimizer={"type": "AdamW", "params": {"lr": 1e-5}})
    with pytest.raises(ConfigError, match="DeepSpeed config of the Accelerate launch: key 'optimizer': .*remove"):
        resolve_plugin_config(acc)


def test_an_auto_key_alignrl_cannot_fill_is_named(model):
    acc = accelerator(fp16={"enabled": "auto"})
    with pytest.raises(DeepSpeedConfigError, match="key 'fp16.enabled': 'auto' is a value alignrl does not fill"):
        engine_config(acc, model, 1.0)


def test_zero3_refuses_a_private_hf_engine_copy_before_anything_loads():
    with pytest.raises(ConfigError, match="recipe: key 'rollout.engine.share_weights': false cannot be used with "
                                          "DeepSpeed ZeRO-3"):
        check_launch(accelerator(stage=3), "hf", HFEngineSettings(share_weights=False))
    check_launch(accelerator(stage=2), "hf", HFEngineSettings(share_weights=False))  # ZeRO-2: full weights per rank
    check_launch(accelerator(stage=3), "hf", HFEngineSettings(share_weights=True))
    assert zero_stage(SimpleNamespace(distributed_type=DistributedType.MULTI_GPU)) == 0


def test_gathered_state_is_the_state_dict_with_tied_weights_once(model):
    state = gathered_state(model, keep=True)
    full = model.state_dict()
    tied = getattr(model.config, "tie_word_embeddings", False)
    assert set(state) == set(full) - ({"lm_head.weight"} if tied else set())
    assert all(torch.equal(state[k], full[k]) for k in state)
    assert gathered_state(model, keep=False) is None


def test_the_schedule_drives_the_torch_optimiser_inside_deepspeeds():
    inner = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(2))], lr=1.0)
    assert base_optimizer(SimpleNamespace(optimizer=inner)) is inner
    assert base_optimizer(inner) is inner


@pytest.mark.parametrize("name", ["single.yaml", "multi_cpu.yaml", "multi_gpu.yaml", "zero2.yaml", "zero3.yaml",
                                  "zero3_offload.yaml"])
def test_accelerate_configs_load_in_accelerate(name):
    """Accelerate's own loader accepts every launch config; DeepSpeed ones start one torchrun per node (the
    default, pdsh, would need ssh between nodes, which slurm/ does not use)."""
    from accelerate.commands.config.config_args import ClusterConfig

    from ds_launch import ACCELERATE_CONFIGS

    config = ClusterConfig.from_yaml_file(ACCELERATE_CONFIGS / name)
    if name.startswith("zero"):
        assert config.distributed_type == DistributedType.DEEPSPEED
        ds = config.deepspeed_config
        assert ds["zero_stage"] == int(name[4]) and ds["deepspeed_multinode_launcher"] == "standard"
        assert (ds["offload_optimizer_device"], ds["offload_param_device"]) == (
            ("cpu", "cpu") if "offload" in name else ("none", "none"))
