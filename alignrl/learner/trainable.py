"""One trainable model of a run: the module prepared by Accelerate, its AdamW optimiser, schedule and clipping.

A run holds a name -> :class:`TrainableModel` map; the policy is the entry named ``"policy"``, and algorithms add
auxiliary entries (e.g. a token-level reward model). Each entry saves into its own folder of a checkpoint.
The schedule counts the model's own optimiser steps: a step in which a model does not train (a freeze) takes
no optimiser step and no schedule step, so its weights and optimiser state stay bit-identical.

Under ``accelerate launch`` with a DeepSpeed config every trainable model is its own DeepSpeed engine
(:mod:`alignrl.learner.zero`): backward, clipping and the optimiser step go through that engine, and checkpoints
hold its sharded state (``deepspeed/``) beside a consolidated Hugging Face folder.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from transformers import PreTrainedModel, get_scheduler

from alignrl.config import ConfigError
from alignrl.learner import zero

POLICY = "policy"
DEEPSPEED_DIR = "deepspeed"  # a checkpoint's sharded DeepSpeed state of one model (every rank's shards)
_DEEPSPEED_TAG = "state"


@dataclass
class OptimizerSettings:
    lr: float
    lr_scheduler: str = "constant_with_warmup"
    warmup_steps: int = 0
    total_steps: int = 1
    weight_decay: float = 0.0
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0  # 0 = no clipping


class TrainableModel:
    """A model, its optimiser and scheduler. ``module`` is what forward/backward use (DDP-wrapped when distributed).

    The scheduler is deliberately *not* passed through ``accelerator.prepare``: Accelerate's scheduler wrapper
    steps ``num_processes`` times per call (it assumes a sharded dataloader), which would run the schedule N times
    too fast on N processes. It is stepped here once per optimiser step instead (on the torch optimiser inside
    DeepSpeed's ZeRO optimiser under DeepSpeed).
    """

    def __init__(self, name: str, accelerator: Accelerator, model: PreTrainedModel, settings: OptimizerSettings):
        self.name, self.accelerator, self.settings = name, accelerator, settings
        self.deepspeed = zero.uses_deepspeed(accelerator)
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=tuple(settings.adam_betas), eps=settings.adam_eps,
                                      weight_decay=settings.weight_decay)
        if self.deepspeed:
            self.module, self.optimizer = zero.initialize(accelerator, model, optimizer, settings.max_grad_norm)
            inner = zero.base_optimizer(self.optimizer)
        else:
            self.module, self.optimizer = accelerator.prepare(model, optimizer)
            inner = self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer
        self.scheduler = get_scheduler(settings.lr_scheduler, inner, num_warmup_steps=settings.warmup_steps,
                                       num_training_steps=max(settings.total_steps, 1))
        self.module.train()
        self._gathered: dict[str, torch.Tensor] | None = None  # ZeRO-3 weights gathered by save_shards

    @property
    def unwrapped(self) -> PreTrainedModel:
        return self.accelerator.unwrap_model(self.module)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def loss_scale(self, passes: int) -> float:
        """Factor that turns a loss already normalised by global counts into what :meth:`backward` needs:
        DDP and DeepSpeed average gradients over ranks, and Accelerate divides by the accumulation steps
        (DeepSpeed's engine divides by its own configured ones, 1 here: see :mod:`alignrl.learner.zero`)."""
        if self.deepspeed:
            return float(self.accelerator.num_processes * self.module.gradient_accumulation_steps())
        return float(self.accelerator.num_processes * passes)

    def accumulate(self) -> contextlib.AbstractContextManager:
        """Context for one micro-batch pass: Accelerate's (no gradient sync before the last pass under DDP)."""
        return contextlib.nullcontext() if self.deepspeed else self.accelerator.accumulate(self.module)

    def backward(self, loss: torch.Tensor, last: bool) -> None:
        """Accumulate ``loss``'s gradients; under DeepSpeed the engine also steps (clips, updates, clears) on the
        ``last`` micro-batch of the optimiser step."""
        if not self.deepspeed:
            self.accelerator.backward(loss)
            return
        self.module.set_gradient_accumulation_boundary(last)
        self.module.backward(loss)
        self.module.step()

    def step(self) -> float:
        """Clip, take the optimiser and schedule step, clear gradients; returns the pre-clip gradient norm.
        (Under DeepSpeed the engine stepped in :meth:`backward`; this takes the schedule step.)"""
        if self.deepspeed:
            norm = self.module.get_global_grad_norm()
            self.scheduler.step()
            return float(norm) if norm is not None else 0.0
        if self.settings.max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(self.parameters(), self.settings.max_grad_norm)
        else:
            grads = [p.grad.norm() for p in self.parameters() if p.grad is not None]
            norm = torch.linalg.vector_norm(torch.stack(grads)) if grads else torch.zeros(())
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def save_shards(self, folder: Path, main: bool) -> None:
        """Every rank, before the main process's :meth:`save`: under DeepSpeed, this rank's shards of weights and
        optimiser state into ``folder/deepspeed/`` (DeepSpeed's layout, with its ``zero_to_fp32.py``) and, under
        ZeRO-3, the full weights gathered for :meth:`save` (kept on the ``main`` process only). Both are
        collectives. Without DeepSpeed it does nothing."""
        if self.deepspeed:
            self.module.save_checkpoint(str(folder / DEEPSPEED_DIR), tag=_DEEPSPEED_TAG, save_latest=False)
            self._gathered = self._consolidated(main)

    def save(self, folder: Path, tokenizer: Any | None = None) -> None:
        """Main process only (after :meth:`save_shards` on every rank): a Hugging Face folder (safetensors), plus
        ``scheduler.pt`` and, without DeepSpeed, ``optimizer.pt``."""
        state, self._gathered = self._gathered, None
        folder.mkdir(parents=True, exist_ok=True)
        self.unwrapped.save_pretrained(folder, safe_serialization=True, **({} if state is None else
                                                                           {"state_dict": state}))
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        if not self.deepspeed:
            torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")

    def _consolidated(self, keep: bool) -> dict[str, torch.Tensor] | None:
        """Under ZeRO-3 the full weights (or LoRA adapters) gathered from every rank's shards; else None (each
        rank holds the full parameters)."""
        unwrapped = self.unwrapped
        if not zero.is_partitioned(unwrapped):
            return None
        if hasattr(unwrapped, "peft_config"):
            from alignrl.learner.weights import lora_weights

            adapters = {name: tensor.cpu().clone() for name, tensor in lora_weights(unwrapped)}  # all ranks gather
            return adapters if keep else None
        return zero.gathered_state(unwrapped, keep)

    def load(self, folder: Path) -> None:
        """Restore weights (full or LoRA adapters), optimiser and scheduler saved by :meth:`save`."""
        sharded = (folder / DEEPSPEED_DIR).is_dir()
        if self.deepspeed != sharded:
            written = "under DeepSpeed" if sharded else "without DeepSpeed"
            raise ConfigError(str(folder), "", f"'{self.name}' was saved {written}; resume it with the same launch "
                              f"(an Accelerate config with{'' if sharded else 'out'} DeepSpeed, same number of "
                              f"processes)")
        if self.deepspeed:
            loaded, _ = self.module.load_checkpoint(str(folder / DEEPSPEED_DIR), tag=_DEEPSPEED_TAG,
                                                    load_optimizer_states=True, load_lr_scheduler_states=False)
            if loaded is None:
                raise RuntimeError(f"{folder / DEEPSPEED_DIR}: DeepSpeed could not load the state of '{self.name}'")
            self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
            return
        from safetensors.torch import load_file

        unwrapped = self.unwrapped
        if (folder / "adapter_model.safetensors").is_file():
            from peft import set_peft_model_state_dict

            set_peft_model_state_dict(unwrapped, load_file(folder / "adapter_model.safetensors"))
        else:
            state: dict[str, torch.Tensor] = {}
            for shard in sorted(folder.glob("*.safetensors")):
                state.update(load_file(shard))
            missing, unexpected = unwrapped.load_state_dict(state, strict=False)
            real_missing = [k for k in missing if not _is_tied(unwrapped, k)]
            if real_missing or unexpected:
                raise RuntimeError(f"{folder}: weights of '{self.name}' do not match the model (missing "
                                   f"{real_missing[:3]}, unexpected {unexpected[:3]})")
        self.optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=False))
        self.scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))


def _is_tied(model: torch.nn.Module, key: str) -> bool:
    return key.endswith("lm_head.weight") and bool(getattr(model.config, "tie_word_embeddings", False))
