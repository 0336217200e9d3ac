"""The learner's side of the weight push: the policy's weights as a lazy stream of size-bounded buckets.

- Full fine-tuning: Hugging Face parameter names of the base model, one bucket at a time. Under DeepSpeed
  ZeRO-3 each module's shards are gathered collectively (``deepspeed.zero.GatheredParameters``), so every rank
  must iterate the stream in step, even ranks whose engine ignores it.
- LoRA: only the adapter tensors (``peft.get_peft_model_state_dict`` names) with the adapter's config, so the
  engine applies them as adapters: nothing is ever merged into the frozen base, which stays bit-identical.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator

import torch
from torch import Tensor

from alignrl.rollout.base import WeightUpdate

Named = tuple[str, Tensor]


def buckets(named: Iterable[Named], bucket_bytes: int) -> Iterator[list[Named]]:
    """Group ``(name, tensor)`` pairs into lists of at most ``bucket_bytes`` (a larger tensor gets its own)."""
    bucket: list[Named] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > bucket_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def gathered(module: torch.nn.Module):
    """Gather a module's own ZeRO-3 partitioned parameters on every rank (a no-op without ZeRO-3)."""
    params = [p for p in module.parameters(recurse=False) if hasattr(p, "ds_id")]
    if not params:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def full_weights(model: torch.nn.Module) -> Iterator[Named]:
    """Every parameter and buffer with its state-dict name, module by module (gathered under ZeRO-3)."""
    for prefix, module in model.named_modules():
        with gathered(module):
            for name, tensor in list(module.named_parameters(recurse=False)) + list(
                    module.named_buffers(recurse=False)):
                if name in getattr(module, "_non_persistent_buffers_set", ()):
                    continue
                yield (f"{prefix}.{name}" if prefix else name), tensor.detach()


def lora_weights(model: torch.nn.Module) -> Iterator[Named]:
    from peft import get_peft_model_state_dict

    with contextlib.ExitStack() as stack:
        for module in model.modules():
            stack.enter_context(gathered(module))
        state = get_peft_model_state_dict(model)
        yield from ((name, tensor.detach()) for name, tensor in state.items())


def weight_update(model: torch.nn.Module, version: int, bucket_bytes: int) -> WeightUpdate:
    """The policy's current weights as a :class:`WeightUpdate` (lazy: nothing is read until iterated)."""
    if hasattr(model, "peft_config"):
        config = model.peft_config["default"].to_dict()
        config = {k: (sorted(v) if isinstance(v, set) else v) for k, v in config.items()}
        return WeightUpdate(version=version, buckets=buckets(lora_weights(model), bucket_bytes), lora=config)
    return WeightUpdate(version=version, buckets=buckets(full_weights(model), bucket_bytes))
