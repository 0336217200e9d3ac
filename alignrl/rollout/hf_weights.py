"""Copying a :class:`WeightUpdate` into a transformers model the engine owns: full weights or LoRA adapters.

Full updates are copied parameter by parameter (``param.copy_``; tied weights such as a tied ``lm_head`` are one
tensor under two names, either name works). LoRA updates wrap the plain model with peft once, on the first LoRA
update, and then only ever overwrite the adapter tensors: adapters are never merged, so the base weights stay
bit-identical to what the engine was built with.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn

# LoRA initialisations that do not change the base weights (pissa, olora, loftq, eva, corda... rewrite them, and a
# LoRA update carries only the adapters, so the engine could not follow).
_BASE_PRESERVING_INITS = (True, False, "gaussian")


def is_peft_model(model: nn.Module) -> bool:
    """Whether ``model`` is a peft ``PeftModel`` (adapters injected)."""
    try:
        from peft import PeftModel
    except ImportError:  # pragma: no cover - peft is a dependency
        return False
    return isinstance(model, PeftModel)


def generation_module(model: nn.Module) -> nn.Module:
    """The transformers model whose ``generate`` actually runs (the base model of a ``PeftModel``)."""
    return model.get_base_model() if is_peft_model(model) else model


def unwrap_lora(model: nn.Module) -> nn.Module:
    """The plain model under ``model``, adapters removed without merging (``model`` itself if not a peft model)."""
    return model.unload() if is_peft_model(model) else model


def load_full(model: nn.Module, buckets: Iterable[list[tuple[str, Tensor]]]) -> int:
    """Copy full weights (``state_dict`` names of the plain model) into ``model``; returns the tensors copied.

    Raises KeyError on a name the model does not have, ValueError on a shape mismatch.
    """
    targets: dict[str, Tensor] = dict(model.named_parameters(remove_duplicate=False))
    targets.update(dict(model.named_buffers(remove_duplicate=False)))
    copied = 0
    with torch.no_grad():
        for bucket in buckets:
            for name, tensor in bucket:
                target = targets.get(name)
                if target is None:
                    raise KeyError(f"weight update names '{name}', which the rollout model does not have "
                                   f"(expected plain Hugging Face names such as '{next(iter(targets))}')")
                if target.shape != tensor.shape:
                    raise ValueError(f"weight update '{name}' has shape {tuple(tensor.shape)}, the rollout model "
                                     f"{tuple(target.shape)}")
                target.copy_(tensor)
                copied += 1
    return copied


def lora_config(config: dict):
    """A peft ``LoraConfig`` from its ``to_dict()`` (json round trip allowed), made for inference only.

    The adapter initialisation is switched off (the first push overwrites every adapter tensor); initialisations
    that rewrite the base weights are refused.
    """
    from peft import LoraConfig

    values = dict(config)
    peft_type = values.get("peft_type", "LORA")
    if str(getattr(peft_type, "value", peft_type)) != "LORA":
        raise ValueError(f"only LoRA adapters can be pushed, got peft_type {peft_type!r}")
    init = values.get("init_lora_weights", True)
    if init not in _BASE_PRESERVING_INITS:
        raise ValueError(f"LoRA init_lora_weights={init!r} changes the base weights, which a LoRA weight update "
                         f"does not carry; push full weights instead")
    values.update(init_lora_weights=False, inference_mode=True)
    return LoraConfig(**values)


def wrap_lora(model: nn.Module, config: dict) -> nn.Module:
    """Inject LoRA adapters described by ``config`` into the plain ``model`` (global RNG untouched)."""
    from peft import get_peft_model

    if is_peft_model(model):
        raise ValueError("the rollout model already holds adapters")
    device = next(model.parameters()).device
    devices = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # adapter init draws random numbers; they are overwritten anyway
        wrapped = get_peft_model(model, lora_config(config))
    wrapped.eval()
    return wrapped


def load_lora(model: nn.Module, buckets: Iterable[list[tuple[str, Tensor]]]) -> int:
    """Copy adapter tensors (``get_peft_model_state_dict`` names) into the peft ``model``; returns the count.

    Raises KeyError on a name that is not one of the model's adapter tensors.
    """
    from peft import set_peft_model_state_dict

    adapter = model.active_adapter if isinstance(getattr(model, "active_adapter", None), str) else "default"
    copied = 0
    with torch.no_grad():
        for bucket in buckets:
            if not bucket:
                continue
            result = set_peft_model_state_dict(model, dict(bucket), adapter_name=adapter)
            if result.unexpected_keys:
                raise KeyError(f"LoRA update names tensors the rollout model's adapters do not have: "
                               f"{list(result.unexpected_keys)[:5]}")
            copied += len(bucket)
    return copied
