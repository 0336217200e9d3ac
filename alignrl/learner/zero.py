"""DeepSpeed ZeRO under ``accelerate launch``: one DeepSpeed engine per trainable model, configured from the launch.

``accelerate launch --config_file recipes/accelerate/zero{2,3}.yaml`` gives the Accelerator a DeepSpeed plugin
whose config decides the ZeRO stage, offloading and precision. alignrl builds the engines itself (as TRL's
``prepare_deepspeed`` does for the reference) instead of through ``accelerator.prepare``, because a run may hold
several trainable models (the policy and an algorithm's auxiliary model) and Accelerate ties ``backward`` to the
first engine it prepares. Each engine gets a copy of the plugin's config with what the run decides filled in:

- ``gradient_clipping``: that model's ``max_grad_norm`` (0 = none), applied by DeepSpeed in its step;
- ``gradient_accumulation_steps = 1``: the learner marks the last micro-batch of a step itself
  (``set_gradient_accumulation_boundary``), since the number of micro-batches changes from step to step;
- ``train_micro_batch_size_per_gpu = 1`` and ``train_batch_size = world size``: bookkeeping only (no DeepSpeed
  dataloader runs), but DeepSpeed refuses to start while they are ``auto`` (environment.md §4's batch-size trap);
- the ZeRO-3 bucket sizes left ``auto``, from the model's hidden size (as Accelerate does).

:func:`resolve_plugin_config` fills the same bookkeeping keys into the shared plugin config in place, so TRL's
``prepare_deepspeed`` (the frozen reference) starts too.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType

from alignrl.config import ConfigError
from alignrl.learner.weights import gathered

_BOOKKEEPING = {"train_micro_batch_size_per_gpu": 1, "gradient_accumulation_steps": 1}


_LAUNCH = "the DeepSpeed config of the Accelerate launch"


class DeepSpeedConfigError(ConfigError):
    """The launch's DeepSpeed config sets something alignrl decides itself, or leaves a key it cannot fill, or the
    recipe asks for something the ZeRO stage cannot do. The message names the config and the key."""

    def __init__(self, key: str, problem: str, source: str = _LAUNCH):
        super().__init__(source, key, problem)


def uses_deepspeed(accelerator: Accelerator) -> bool:
    return accelerator.distributed_type == DistributedType.DEEPSPEED


def zero_stage(accelerator: Accelerator) -> int:
    """The ZeRO stage of the launch (0 without DeepSpeed)."""
    if not uses_deepspeed(accelerator):
        return 0
    return int(accelerator.state.deepspeed_plugin.deepspeed_config["zero_optimization"].get("stage", 0))


def check_launch(accelerator: Accelerator, engine: str, engine_params: Any) -> None:
    """Before anything is loaded: the DeepSpeed config is usable, and the rollout engine can run beside it.
    Under ZeRO-3 the ``hf`` engine must generate with the sharded policy itself (``share_weights: true``): a
    private copy would be a copy of one rank's shards."""
    if not uses_deepspeed(accelerator):
        return
    resolve_plugin_config(accelerator)
    if zero_stage(accelerator) == 3 and engine == "hf" and not getattr(engine_params, "share_weights", True):
        raise DeepSpeedConfigError("rollout.engine.share_weights", "false cannot be used with DeepSpeed ZeRO-3 "
                                   "(the hf engine's own copy would hold one rank's shards); use true (it generates "
                                   "with the sharded policy) or another engine", source="recipe")


def resolve_plugin_config(accelerator: Accelerator) -> dict[str, Any]:
    """Fill the bookkeeping ``auto`` keys of the plugin's DeepSpeed config in place; returns the config."""
    config = accelerator.state.deepspeed_plugin.deepspeed_config
    for key in ("optimizer", "scheduler"):
        if key in config:
            raise DeepSpeedConfigError(key, "alignrl builds AdamW and its learning-rate schedule from the recipe "
                                       f"(trainer.lr, trainer.lr_scheduler...); remove '{key}' from the DeepSpeed "
                                       "config")
    for key, value in _BOOKKEEPING.items():
        if config.get(key, "auto") == "auto":
            config[key] = value
    if config.get("train_batch_size", "auto") == "auto":
        config["train_batch_size"] = (config["train_micro_batch_size_per_gpu"] * config["gradient_accumulation_steps"]
                                      * accelerator.num_processes)
    return config


def engine_config(accelerator: Accelerator, model: torch.nn.Module, max_grad_norm: float) -> dict[str, Any]:
    """The DeepSpeed config of one trainable model (see the module docstring)."""
    config = copy.deepcopy(resolve_plugin_config(accelerator))
    config["gradient_clipping"] = float(max_grad_norm)
    config["gradient_accumulation_steps"] = 1
    config["train_micro_batch_size_per_gpu"] = 1
    config["train_batch_size"] = accelerator.num_processes
    zero = config.setdefault("zero_optimization", {})
    hidden = _hidden_size(model)
    sizes = {"reduce_bucket_size": hidden * hidden, "stage3_prefetch_bucket_size": int(0.9 * hidden * hidden),
             "stage3_param_persistence_threshold": 10 * hidden}
    for key, value in sizes.items():
        if zero.get(key) == "auto":
            zero[key] = value
    left = [key for key, value in _flatten(config) if value == "auto"]
    if left:
        raise DeepSpeedConfigError(", ".join(left), "'auto' is a value alignrl does not fill here; give a value in "
                                   "the DeepSpeed config")
    return config


def initialize(accelerator: Accelerator, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
               max_grad_norm: float) -> tuple[Any, Any]:
    """``deepspeed.initialize`` one trainable model with its own config; returns ``(engine, zero_optimizer)``.
    With the optimiser offloaded to CPU, AdamW becomes DeepSpeed's CPU Adam (as Accelerate does)."""
    import deepspeed

    config = engine_config(accelerator, model, max_grad_norm)
    offload = config.get("zero_optimization", {}).get("offload_optimizer", {}).get("device", "none")
    if offload not in (None, "none") and config.get("zero_force_ds_cpu_optimizer", True):
        from accelerate.utils import map_pytorch_optim_to_deepspeed

        optimizer = map_pytorch_optim_to_deepspeed(optimizer)
    config["zero_allow_untested_optimizer"] = True
    engine, zero_optimizer, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine, zero_optimizer


def base_optimizer(zero_optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser inside DeepSpeed's ZeRO optimiser: the one whose ``param_groups`` hold the lr."""
    inner = getattr(zero_optimizer, "optimizer", zero_optimizer)
    return inner if isinstance(inner, torch.optim.Optimizer) else zero_optimizer


def is_partitioned(model: torch.nn.Module) -> bool:
    """Whether ``model``'s parameters are ZeRO-3 shards (each rank holds only its part)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


def gathered_state(model: torch.nn.Module, keep: bool) -> dict[str, torch.Tensor] | None:
    """The full state dict of a (possibly ZeRO-3-sharded) model, gathered module by module on every rank (a
    collective: every rank must call it); CPU copies are kept only where ``keep``. A parameter shared under two
    names (tied embeddings) appears once."""
    state: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for prefix, module in model.named_modules():
        with gathered(module):
            for name, tensor in _own_tensors(module):
                if id(tensor) in seen:
                    continue
                seen.add(id(tensor))
                if keep:
                    state[f"{prefix}.{name}" if prefix else name] = tensor.detach().cpu().clone()
    return state if keep else None


def _own_tensors(module: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    yield from module.named_parameters(recurse=False)
    skip = getattr(module, "_non_persistent_buffers_set", ())
    yield from ((name, b) for name, b in module.named_buffers(recurse=False) if name not in skip)


def _hidden_size(model: torch.nn.Module) -> int:
    config = getattr(model, "config", None)
    sizes = getattr(config, "hidden_sizes", None)
    return int(max(sizes) if sizes else getattr(config, "hidden_size", 1024))


def _flatten(config: dict[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in config.items():
        if isinstance(value, dict):
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value
