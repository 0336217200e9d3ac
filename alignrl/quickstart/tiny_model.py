"""A tiny Llama-architecture model and a character-level tokenizer, built in code (no hub, no network).

The tokenizer is a ``WordLevel`` model over single characters (printable ASCII plus newline), a ``Split`` pre-tokenizer
that isolates every character and a ``Fuse`` decoder, wrapped in ``PreTrainedTokenizerFast`` with
``<pad>``/``<s>``/``</s>``/``<unk>``. It adds no BOS/EOS when encoding (the trainers append EOS to completions). Its chat
template simply concatenates the messages' contents, so a conversational prompt reads like the raw prompt.

The model is a ``LlamaForCausalLM`` (a Qwen2 config would make ``AutoTokenizer`` pick a tokenizer class that drops
spaces from this vocabulary) with ``head_dim`` >= 32, which vLLM's CPU attention needs. Both survive
``save_pretrained`` and ``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import string
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# printable ASCII (space through ~) and newline; the task itself uses digits, "+=", " ", "\", "boxed", "{}"
CHARACTERS = tuple(string.digits + string.ascii_letters + string.punctuation + " \n")

# Concatenate the contents: raw prompts and one-message chats give the same text.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"

# head_dim must be one of vLLM's supported sizes (32, 64, 80, ...). "quickstart" is the setting measured for the
# quickstart (see alignrl/quickstart/task.py and the report in the repo's history); "test" is for fast unit tests.
PRESETS: dict[str, dict[str, Any]] = {
    "quickstart": dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=4,
        head_dim=32,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    ),
    "test": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=32,
        max_position_embeddings=128,
        tie_word_embeddings=True,
    ),
}


# Behaviour cloning of the quickstart model on the quickstart task (alignrl.quickstart.task.TaskSpec defaults),
# as measured on a 2-core CPU: see quickstart_sft_params.
QUICKSTART_SFT: dict[str, Any] = dict(
    learning_rate=3e-3,
    max_steps=700,
    per_device_train_batch_size=128,
    gradient_accumulation_steps=1,
    warmup_steps=0.05,
    lr_scheduler_type="cosine",
    adam_beta2=0.99,
    weight_decay=0.0,
    max_grad_norm=1.0,
)


def quickstart_sft_params(seed: int = 0, **overrides: Any):
    """``alignrl.sft.SFTParams`` for behaviour-cloning the "quickstart" preset on the quickstart task."""
    from alignrl.sft import SFTParams

    return SFTParams(**{**QUICKSTART_SFT, "seed": seed, **overrides})


def build_tokenizer(add_bos: bool = False) -> PreTrainedTokenizerFast:
    """The character-level tokenizer (ids: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3, then the characters)."""
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + CHARACTERS)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    backend.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    backend.decoder = decoders.Fuse()
    if add_bos:
        backend.post_processor = processors.TemplateProcessing(
            single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, pad_token=PAD, bos_token=BOS, eos_token=EOS, unk_token=UNK
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(
    tokenizer: PreTrainedTokenizerFast, preset: str = "quickstart", seed: int = 0, **overrides: Any
) -> LlamaForCausalLM:
    """A freshly initialised ``LlamaForCausalLM`` sized by ``preset`` (see ``PRESETS``), any ``LlamaConfig`` field
    overridden by keyword, initialised deterministically from ``seed``, float32, on CPU."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; known: {', '.join(PRESETS)}")
    knobs = {**PRESETS[preset], **overrides}
    head_dim = knobs.get("head_dim") or knobs["hidden_size"] // knobs["num_attention_heads"]
    if head_dim < 32:
        raise ValueError(f"head_dim {head_dim} < 32: vLLM's CPU attention needs 32, 64, 80, ...")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        **knobs,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def count_parameters(model: torch.nn.Module) -> int:
    """Distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())
