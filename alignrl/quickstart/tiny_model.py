"""A tiny Llama-architecture model and a character-level tokenizer, built in code (no hub, no network).

The tokenizer is a ``WordLevel`` model over single characters (printable ASCII plus newline) plus one word,
``\\boxed{``, with a ``Split`` pre-tokenizer that isolates ``\\boxed{`` or else every single character, and a
``Fuse`` decoder, wrapped in ``PreTrainedTokenizerFast`` with ``<pad>``/``<s>``/``</s>``/``<unk>``. ``\\boxed{`` as one
token puts the answer 6 positions closer to the operands it is computed from (and shortens every sequence by 6): the
tiny model learns the task faster and more reliably. Decoding gives back the exact text. It adds no BOS/EOS when
encoding (the trainers append EOS to completions). Its chat template concatenates the messages' contents, so a
conversational prompt reads like the raw prompt.

The model is a ``LlamaForCausalLM`` (a Qwen2 config would make ``AutoTokenizer`` pick a tokenizer class that drops
spaces from this vocabulary) with ``head_dim`` = 32, which vLLM's CPU attention supports. Both survive
``save_pretrained`` and ``AutoTokenizer`` / ``AutoModelForCausalLM.from_pretrained``.
"""

from __future__ import annotations

import string
from typing import Any

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<s>", "</s>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
# printable ASCII (space through ~) and newline; the task itself uses digits, "+=", " ", "\", "boxed", "{}"
CHARACTERS = tuple(string.digits + string.ascii_letters + string.punctuation + " \n")

# Concatenate the contents: raw prompts and one-message chats give the same text.
CHAT_TEMPLATE = "{% for message in messages %}{{ message['content'] }}{% endfor %}"

# head_dim must be one of vLLM's supported sizes (32, 64, 80, ...). "test" is for fast unit tests. "quickstart" is the
# setting measured for the quickstart task (alignrl.quickstart.task.TaskSpec defaults), 1.0M parameters:
# - 8 heads x 32 (attention width 256 over a 128-wide residual stream): the model must locate each operand digit
#   by relative position; with 4 heads some seeds never found the tens digits for the boxed answer within the BC
#   budget, with 8 all measured seeds did.
# - rope_theta 100 instead of 10,000: sequences are ~17 tokens, and at 10,000 half of the rotary frequencies barely
#   turn over that span; 100 spreads them over the offsets that matter and sped up learning the digit lookups.
PRESETS: dict[str, dict[str, Any]] = {
    "quickstart": dict(
        hidden_size=128,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=8,
        head_dim=32,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": 100.0},
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


# Behaviour cloning of the "quickstart" preset on the quickstart task (TaskSpec defaults: 60,000 demonstrations,
# 32.5% wrong by the dropped tens carry). Measured through alignrl.sft.run_sft on a 2-core CPU, seeds 0-6: 0.17 s a
# step, ~140-150 s in all; final loss 0.036-0.038 on every seed; greedy held-out pass@1 46-53% (ceiling 50.5%); the
# weakest answer digit >= 99% teacher-forced. adam_beta2 0.99 rather than 0.999 recovers faster from the loss plateaus.
QUICKSTART_SFT: dict[str, Any] = dict(
    learning_rate=3e-3,
    max_steps=800,
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


BOXED = "\\boxed{"


def build_tokenizer(add_bos: bool = False, boxed_token: bool = True) -> PreTrainedTokenizerFast:
    """The character-level tokenizer (ids: ``<pad>`` 0, ``<s>`` 1, ``</s>`` 2, ``<unk>`` 3, then the characters)."""
    words = SPECIAL_TOKENS + CHARACTERS + ((BOXED,) if boxed_token else ())
    vocab = {tok: i for i, tok in enumerate(words)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    pattern = Regex(r"\\boxed\{|[\s\S]") if boxed_token else ""
    backend.pre_tokenizer = pre_tokenizers.Split(pattern=pattern, behavior="isolated")
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
