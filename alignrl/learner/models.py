"""Load the policy (optionally with LoRA) and the frozen reference model from a ``ModelConfig``."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from alignrl.config.schema import LoraConfig, ModelConfig


class ModelLoadError(RuntimeError):
    """The model or tokenizer could not be loaded; the message names the config key and the path."""


def bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def resolve_dtype(name: str) -> torch.dtype:
    """``auto`` = bf16 on GPUs that have it, float32 elsewhere (CPU training in bf16 is slow and lossy)."""
    if name == "auto":
        return torch.bfloat16 if bf16_supported() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def load_tokenizer(config: ModelConfig) -> PreTrainedTokenizerBase:
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.path, trust_remote_code=config.trust_remote_code)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model.path '{config.path}': cannot load the tokenizer: {err}") from err
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_causal_lm(path: str, config: ModelConfig, key: str, dtype: str | None = None) -> PreTrainedModel:
    kwargs = {"dtype": resolve_dtype(dtype or config.dtype), "trust_remote_code": config.trust_remote_code}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    try:
        return AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"{key} '{path}': cannot load the model: {err}") from err


def enable_gradient_checkpointing(model: PreTrainedModel) -> None:
    """Non-reentrant activation checkpointing; transformers >= 5.2x renamed the method, older ones keep the old name."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False


def apply_lora(model: PreTrainedModel, lora: LoraConfig) -> PreTrainedModel:
    from peft import LoraConfig as PeftLoraConfig, get_peft_model

    peft_config = PeftLoraConfig(r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                 target_modules=lora.target_modules, task_type="CAUSAL_LM")
    return get_peft_model(model, peft_config)


def load_policy(config: ModelConfig) -> PreTrainedModel:
    """The trainable policy: full weights, or LoRA adapters on frozen base weights.

    With ``dtype: auto``, full fine-tuning keeps float32 master weights (bf16 *compute* comes from
    ``trainer.mixed_precision``): AdamW steps at RL learning rates (~1e-6) are below bf16's resolution and would be
    rounded away. With LoRA the frozen base loads in bf16 where supported (peft keeps the adapters in float32).
    ``dtype: bfloat16`` forces pure-bf16 weights, to save memory at that cost."""
    full_weights_auto = config.dtype == "auto" and config.lora is None
    model = load_causal_lm(config.path, config, "model.path", "float32" if full_weights_auto else None)
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    if config.lora is not None:
        model = apply_lora(model, config.lora)
    return model


def load_reference(config: ModelConfig) -> PreTrainedModel | None:
    """A frozen copy for KL. None when LoRA is on and the reference is the base: adapters are disabled instead.

    ``reference_dtype: policy`` stores it like the policy's trainable weights (float32 master weights under
    ``dtype: auto``), so under the same autocast both compute identically and the KL is exactly 0 at the start."""
    if config.lora is not None and config.reference is None:
        return None
    path = config.reference or config.path
    dtype = config.reference_dtype
    if dtype == "policy":
        dtype = "float32" if config.dtype == "auto" else config.dtype
    model = load_causal_lm(path, config, "model.reference" if config.reference else "model.path", dtype)
    model.requires_grad_(False)
    return model.eval()


def max_context(model: PreTrainedModel) -> int | None:
    return getattr(model.config, "max_position_embeddings", None)


def load_auxiliary(spec, config: ModelConfig) -> PreTrainedModel:
    """An algorithm's auxiliary trainable model (:class:`~alignrl.algorithms.AuxiliaryModel`): a float32 copy of
    the starting policy (``init: policy``) or of another folder, with a one-output, bias-free, zero-initialised
    linear head in place of the LM head when ``head == "scalar"`` (so an untrained model scores every token 0)."""
    path = config.path if spec.init == "policy" else spec.init
    key = "model.path" if spec.init == "policy" else f"algorithm auxiliary model '{spec.name}'.init"
    model = load_causal_lm(path, config, key, "float32")
    if spec.head == "scalar":
        hidden = model.get_output_embeddings().in_features
        head = torch.nn.Linear(hidden, 1, bias=False)
        torch.nn.init.zeros_(head.weight)
        model.config.tie_word_embeddings = False
        model.set_output_embeddings(head)
    elif spec.head != "lm":
        raise ValueError(f"auxiliary model '{spec.name}': head must be 'scalar' or 'lm', got {spec.head!r}")
    if config.gradient_checkpointing:
        enable_gradient_checkpointing(model)
    return model
