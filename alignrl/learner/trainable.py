"""One trainable model of a run: the module prepared by Accelerate, its AdamW optimiser, schedule and clipping.

A run holds a name -> :class:`TrainableModel` map; the policy is the entry named ``"policy"``, and algorithms add
auxiliary entries (e.g. a token-level reward model). Each entry saves into its own folder of a checkpoint.
The schedule counts the model's own optimiser steps: a step in which a model does not train (a freeze) takes
no optimiser step and no schedule step, so its weights and optimiser state stay bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from transformers import PreTrainedModel, get_scheduler

POLICY = "policy"


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
    too fast on N processes. It is stepped here once per optimiser step instead.
    """

    def __init__(self, name: str, accelerator: Accelerator, model: PreTrainedModel, settings: OptimizerSettings):
        self.name, self.accelerator, self.settings = name, accelerator, settings
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.lr, betas=tuple(settings.adam_betas), eps=settings.adam_eps,
                                      weight_decay=settings.weight_decay)
        self.module, self.optimizer = accelerator.prepare(model, optimizer)
        self.scheduler = get_scheduler(settings.lr_scheduler, self.optimizer.optimizer if hasattr(
            self.optimizer, "optimizer") else self.optimizer, num_warmup_steps=settings.warmup_steps,
            num_training_steps=max(settings.total_steps, 1))
        self.module.train()

    @property
    def unwrapped(self) -> PreTrainedModel:
        return self.accelerator.unwrap_model(self.module)

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.module.parameters() if p.requires_grad]

    def loss_scale(self, passes: int) -> float:
        """Factor that turns a loss already normalised by global counts into what ``accelerator.backward`` needs:
        DDP averages gradients over ranks, and Accelerate divides by the accumulation steps (DeepSpeed's engine
        divides by its own configured ones instead)."""
        if self.accelerator.distributed_type == DistributedType.DEEPSPEED:
            return float(self.accelerator.num_processes * self.module.gradient_accumulation_steps())
        return float(self.accelerator.num_processes * passes)

    def step(self) -> float:
        """Clip, take the optimiser and schedule step, clear gradients; returns the pre-clip gradient norm."""
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

    def save(self, folder: Path, tokenizer: Any | None = None) -> None:
        """Main process only: a Hugging Face folder (safetensors) plus ``optimizer.pt`` and ``scheduler.pt``."""
        folder.mkdir(parents=True, exist_ok=True)
        self.unwrapped.save_pretrained(folder, safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        torch.save(self.optimizer.state_dict(), folder / "optimizer.pt")
        torch.save(self.scheduler.state_dict(), folder / "scheduler.pt")

    def load(self, folder: Path) -> None:
        """Restore weights (full or LoRA adapters), optimiser and scheduler saved by :meth:`save`."""
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
