"""Behaviour cloning (supervised fine-tuning on demonstrations) with TRL's ``SFTTrainer``.

``run_sft(model, tokenizer, rows, output_dir, params)`` trains on prompt/completion pairs with the loss on the
completion tokens only (EOS appended by TRL), then saves the final model and tokenizer (safetensors, Hugging Face
format) into ``output_dir``. It works in one process or under ``accelerate launch`` / ``torchrun`` with N processes
(on CPU the process group uses gloo).

Settings chosen for speed on CPU (measured on the quickstart's tiny models, 2 cores): no gradient checkpointing (TRL's
default is on; at this size it only costs time), fp32 unless the GPU supports bf16 (bf16 autocast on a CPU without
native bf16 is slower), no packing (the quickstart's sequences all have the same length), no evaluation, no
intermediate checkpoints, no pinned memory, ``dataloader_num_workers=0`` (one worker process made training 2.7x slower
on 2 cores: it competes with the two compute threads). TRL's per-step token accuracy and entropy cannot be switched
off, but with a ~100-token vocabulary they cost little: SFTTrainer ran at ~1.2x the time of a minimal hand-written
loop on the same batches. Preparing 60,000 prompt/completion pairs (EOS, tokenization, labels) takes ~12-16 s.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import ProgressCallback


@dataclass
class SFTParams:
    """Knobs of ``run_sft``; each maps onto a ``trl.SFTConfig`` / ``transformers.TrainingArguments`` field.

    The defaults are TRL's (fine-tuning a pretrained LLM); ``alignrl.quickstart.tiny_model.quickstart_sft_params``
    gives the settings measured for the quickstart's from-scratch tiny model."""

    learning_rate: float = 2e-5
    """Peak learning rate of AdamW. (The quickstart's tiny model uses 3e-3: ``quickstart_sft_params``.)"""
    max_steps: int = -1
    """Optimizer steps to train for; -1 means train for ``num_train_epochs`` instead."""
    num_train_epochs: float = 1.0
    """Passes over the demonstrations; used only when ``max_steps`` is -1."""
    per_device_train_batch_size: int = 8
    """Sequences per process per micro-batch."""
    gradient_accumulation_steps: int = 1
    """Micro-batches accumulated per optimizer step (effective batch = this x batch size x processes)."""
    warmup_steps: float = 0.0
    """Linear warm-up: an int is a number of steps, a float in [0, 1) a share of the total steps."""
    lr_scheduler_type: str = "linear"
    """Learning-rate schedule after warm-up (any ``transformers`` scheduler name: "linear", "cosine", "constant")."""
    weight_decay: float = 0.0
    """AdamW decoupled weight decay."""
    adam_beta1: float = 0.9
    """AdamW first-moment decay."""
    adam_beta2: float = 0.999
    """AdamW second-moment decay (0.99 trains the quickstart's tiny model more reliably at a high learning rate)."""
    max_grad_norm: float = 1.0
    """Gradient-norm clipping threshold (0 disables clipping)."""
    max_length: int | None = 1024
    """Longer prompt+completion sequences are truncated to this many tokens (None: never truncate)."""
    seed: int = 0
    """Seed of the model-independent randomness: data order, dropout."""
    logging_steps: int = 50
    """Log the training loss (and TRL's token accuracy / entropy) every this many steps."""
    bf16: bool | None = None
    """bf16 mixed precision; None = on only where the hardware supports it natively (a CUDA GPU with bf16), never
    on CPU."""
    report_to: list[str] = field(default_factory=list)
    """Logging integrations ("tensorboard", "wandb", ...); empty = none."""
    progress_bar: bool = False
    """Show the tqdm progress bar."""
    extra_args: dict[str, Any] = field(default_factory=dict)
    """Further ``SFTConfig`` fields, passed through as they are (they override the settings above)."""


class _LossInBar(ProgressCallback):
    """transformers' progress bar, labelled "sft", with the latest loss as its postfix (instead of a dict printed
    under the bar at every log)."""

    def on_train_begin(self, args, state, control, **kwargs):
        super().on_train_begin(args, state, control, **kwargs)
        if self.training_bar is not None:
            self.training_bar.set_description("sft")
            self.training_bar.unit = "step"

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.training_bar is not None and logs and "loss" in logs:
            self.training_bar.set_postfix(loss=f"{float(logs['loss']):.4f}", refresh=False)


def _bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def build_sft_config(output_dir: str | os.PathLike, params: SFTParams) -> Any:
    """The ``trl.SFTConfig`` that ``run_sft`` trains with."""
    from trl import SFTConfig

    on_gpu = torch.cuda.is_available()
    bf16 = _bf16_supported() if params.bf16 is None else params.bf16
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        learning_rate=params.learning_rate,
        max_steps=params.max_steps,
        num_train_epochs=params.num_train_epochs,
        per_device_train_batch_size=params.per_device_train_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps,
        warmup_steps=params.warmup_steps,
        lr_scheduler_type=params.lr_scheduler_type,
        weight_decay=params.weight_decay,
        adam_beta1=params.adam_beta1,
        adam_beta2=params.adam_beta2,
        max_grad_norm=params.max_grad_norm,
        max_length=params.max_length,
        seed=params.seed,
        data_seed=params.seed,
        logging_steps=params.logging_steps,
        logging_first_step=True,
        bf16=bf16,
        fp16=False,
        report_to=list(params.report_to) or "none",
        disable_tqdm=not params.progress_bar,
        # prompt/completion data: loss on the completion only; TRL appends the tokenizer's EOS to the completion
        completion_only_loss=True,
        packing=False,
        # speed on CPU
        dataloader_num_workers=0,
        dataloader_pin_memory=on_gpu,
        eval_strategy="no",
        save_strategy="no",
    )
    # no activation checkpointing (TRL turns it on); transformers >= 5.2x renamed the flag and warns on the old name
    checkpointing_flag = ("activation_checkpointing" if "activation_checkpointing" in SFTConfig.__dataclass_fields__
                          else "gradient_checkpointing")
    if not {"activation_checkpointing", "gradient_checkpointing"} & set(params.extra_args):
        kwargs[checkpointing_flag] = False
    if _world_size() > 1 and not on_gpu:
        kwargs["ddp_backend"] = "gloo"
    kwargs.update(params.extra_args)
    return SFTConfig(**kwargs)


def run_sft(
    model: Any,
    tokenizer: Any,
    rows: list[dict[str, Any]],
    output_dir: str | os.PathLike,
    params: SFTParams | None = None,
) -> Path:
    """Behaviour-clone ``model`` on ``rows`` (dicts with "prompt" and "completion" strings; other keys ignored).

    Saves the trained model and tokenizer into ``output_dir`` (``model.safetensors``, ``config.json``, tokenizer
    files) plus ``trainer_state.json`` (the loss log) and ``sft_params.json``; returns ``Path(output_dir)``. The
    ``model`` object is trained in place. Under several processes every rank must call it; rank 0 writes the files.
    """
    import datasets
    from datasets import Dataset
    from trl import SFTTrainer

    params = params or SFTParams()
    if not rows:
        raise ValueError("run_sft needs at least one demonstration")
    missing = [k for k in ("prompt", "completion") if k not in rows[0]]
    if missing:
        raise ValueError(f"demonstration rows need 'prompt' and 'completion'; missing {missing}")
    dataset = Dataset.from_dict(
        {"prompt": [str(r["prompt"]) for r in rows], "completion": [str(r["completion"]) for r in rows]}
    )
    out = Path(output_dir)
    use_cache = getattr(model.config, "use_cache", None)  # Trainer sets it to False (args.use_cache)
    bars_were_on = datasets.is_progress_bar_enabled()
    datasets.disable_progress_bars()  # TRL's dataset preparation shows five of them: one bar per phase is enough
    try:
        trainer = SFTTrainer(
            model=model,
            args=build_sft_config(out, params),
            train_dataset=dataset,
            processing_class=tokenizer,
        )
    finally:
        if bars_were_on:
            datasets.enable_progress_bars()
    if params.progress_bar:  # one bar with the loss in it
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(_LossInBar())
    trainer.train()
    if use_cache is not None:
        trainer.accelerator.unwrap_model(trainer.model).config.use_cache = use_cache  # saved for generation
    trainer.save_model(str(out))  # model + tokenizer, safetensors, rank 0 only
    trainer.save_state()
    if trainer.is_world_process_zero():
        (out / "sft_params.json").write_text(json.dumps(asdict(params), indent=2, default=str))
    # TRL patches a fused LM head onto the instance's forward; drop it so the caller gets the plain model back
    unwrapped = trainer.accelerator.unwrap_model(trainer.model)
    for m in {id(x): x for x in (model, unwrapped)}.values():
        if "forward" in vars(m):
            del m.forward
    trainer.accelerator.wait_for_everyone()
    return out
