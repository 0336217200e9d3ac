"""The trainer's side of feeding vLLM: the model folder it starts from, and weight / LoRA updates in its formats.

vLLM loads a model from a folder only, so an engine built from the learner's in-memory module first writes a plain
Hugging Face folder (LoRA layers stripped, adapters not merged). Full updates reach vLLM's ``reload_weights``
with Hugging Face names (vLLM fuses q/k/v and gate/up itself); a tied ``lm_head`` must be sent explicitly, or
vLLM's layer-by-layer reload keeps the old head (seen on vLLM 0.32: logprobs 0.5 nats off), so
:func:`with_tied_head` adds it when missing. LoRA updates become peft adapter files (config + safetensors) that
vLLM loads as a LoRA request; nothing is merged.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from alignrl.rollout.base import WeightUpdate

VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM 0.32's allowed max_lora_rank values
EMBED, HEAD = "model.embed_tokens.weight", "lm_head.weight"


def plain_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """A CPU copy of the base model's weights under plain Hugging Face names (peft's ``base_layer.`` and the
    adapters dropped; ZeRO-3 shards gathered module by module; a tied ``lm_head`` left out)."""
    from alignrl.learner.weights import full_weights

    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    tied = bool(getattr(base.config, "tie_word_embeddings", False))
    return {name.replace(".base_layer.", "."): tensor.to("cpu", copy=True) for name, tensor in full_weights(base)
            if "lora_" not in name and not (tied and name == HEAD)}


def save_model_folder(model: torch.nn.Module, tokenizer: Any, folder: str | Path) -> Path:
    """Write ``model`` (a transformers model or a peft model around one) and ``tokenizer`` as a plain HF folder."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    base.config.save_pretrained(folder)
    if getattr(base, "generation_config", None) is not None:
        base.generation_config.save_pretrained(folder)
    save_file(plain_state_dict(model), str(folder / "model.safetensors"), metadata={"format": "pt"})
    tokenizer.save_pretrained(folder)
    return folder


def ties_embeddings(model_folder: str | Path) -> bool:
    """Whether the model in ``model_folder`` ties ``lm_head`` to the input embeddings (``tie_word_embeddings``)."""
    config = json.loads((Path(model_folder) / "config.json").read_text(encoding="utf-8"))
    text_config = config.get("text_config") or {}
    return bool(config.get("tie_word_embeddings", text_config.get("tie_word_embeddings", False)))


def with_tied_head(buckets: Iterable[list[tuple[str, Tensor]]], tied: bool) -> Iterator[list[tuple[str, Tensor]]]:
    """``buckets``, plus ``lm_head.weight`` (the embedding tensor) at the end when ``tied`` and it was not sent."""
    embed, head_sent = None, False
    for bucket in buckets:
        for name, tensor in bucket:
            if name == EMBED:
                embed = tensor
            head_sent = head_sent or name == HEAD
        yield bucket
    if tied and embed is not None and not head_sent:
        yield [(HEAD, embed)]


def check_names(bucket: list[tuple[str, Tensor]], known: set[str] | None) -> None:
    """Raise KeyError on a name the served model does not have (``known`` None: no check)."""
    if known is None:
        return
    for name, _ in bucket:
        if name not in known:
            example = next(iter(sorted(known)), "model.embed_tokens.weight")
            raise KeyError(f"weight update names '{name}', which the vLLM model does not have (expected plain "
                           f"Hugging Face names such as '{example}')")


def safetensors_bytes(bucket: list[tuple[str, Tensor]]) -> bytes:
    """One bucket as ``safetensors`` bytes (CPU, contiguous; tensors sharing storage are copied apart)."""
    from safetensors.torch import save

    seen: set[tuple[int, int]] = set()
    out: dict[str, Tensor] = {}
    for name, tensor in bucket:
        tensor = tensor.detach().to("cpu").contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        out[name] = tensor.clone() if key in seen else tensor
        seen.add(key)
    return save(out)


def vllm_lora_rank(rank: int) -> int:
    """The smallest ``max_lora_rank`` vLLM accepts that holds an adapter of rank ``rank``."""
    for allowed in VLLM_LORA_RANKS:
        if allowed >= rank:
            return allowed
    raise ValueError(f"LoRA rank {rank} is above vLLM's largest max_lora_rank ({VLLM_LORA_RANKS[-1]})")


def check_lora_config(config: dict) -> dict:
    """The json-able peft LoRA config, refused clearly where vLLM cannot serve it."""
    values = json.loads(json.dumps(config, default=lambda v: sorted(v) if isinstance(v, set) else str(v)))
    peft_type = str(values.get("peft_type", "LORA")).split(".")[-1]
    problems = [(peft_type != "LORA", f"peft_type {peft_type} (only LoRA)"),
                (bool(values.get("use_dora")), "DoRA adapters (use_dora)"),
                (bool(values.get("modules_to_save")), f"modules_to_save {values.get('modules_to_save')}"),
                (values.get("bias", "none") != "none", f"bias={values.get('bias')!r}"),
                (values.get("init_lora_weights", True) not in (True, False, "gaussian"),
                 f"init_lora_weights={values.get('init_lora_weights')!r}, which rewrites the base weights")]
    for bad, what in problems:
        if bad:
            raise ValueError(f"the vllm engine cannot serve this LoRA adapter: {what}; use the hf engine or "
                             f"push full weights")
    return values


def adapter_payload(update: WeightUpdate) -> tuple[str, bytes]:
    """A LoRA update as (adapter_config.json text, adapter_model.safetensors bytes)."""
    assert update.lora is not None
    config = check_lora_config(update.lora)
    tensors = [pair for bucket in update.buckets for pair in bucket]
    if not tensors:
        raise ValueError("LoRA weight update holds no adapter tensors")
    return json.dumps(config), safetensors_bytes(tensors)


def write_adapter(folder: str | Path, config_json: str, data: bytes) -> Path:
    """Write a peft adapter folder vLLM can load as a LoRA request."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_model.safetensors").write_bytes(data)
    (folder / "adapter_config.json").write_text(config_json, encoding="utf-8")
    return folder
