"""The learner: a policy on Accelerate (DDP on 1..N processes), AdamW with a warm-up schedule, gradient
accumulation over micro-batches, clipping, and the forward pass that turns a batch into token log-probs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from accelerate import Accelerator
from torch import Tensor
from transformers import PreTrainedModel, get_scheduler

from alignrl.algorithms.base import Algorithm, PolicyInputs
from alignrl.batch import RolloutBatch
from alignrl.config.schema import ModelConfig, TrainerConfig


def token_logprobs(model: torch.nn.Module, batch: RolloutBatch, temperature: float, with_entropy: bool = False,
                   entropy_grad: bool = False) -> tuple[Tensor, Tensor | None]:
    """Log-probs [B, T] of the completion tokens under ``model`` at the sampling temperature (and entropy)."""
    input_ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)
    attention = torch.cat([batch.prompt_mask, batch.completion_mask.long()], dim=1)
    positions = (attention.cumsum(1) - 1).clamp(min=0)
    width = batch.completion_ids.shape[1]
    device = next(model.parameters()).device
    out = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                position_ids=positions.to(device), logits_to_keep=width + 1, use_cache=False)
    logits = out.logits[:, :-1].float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    logp_all = torch.log_softmax(logits, dim=-1)
    logp = logp_all.gather(-1, batch.completion_ids.to(device)[..., None]).squeeze(-1)
    entropy = None
    if with_entropy:
        with torch.set_grad_enabled(entropy_grad and torch.is_grad_enabled()):
            entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


class Learner:
    """Owns the trainable policy, its optimiser and schedule. ``update`` runs one rollout batch."""

    def __init__(self, accelerator: Accelerator, model: PreTrainedModel, model_config: ModelConfig,
                 config: TrainerConfig, temperature: float, reference: PreTrainedModel | None = None):
        self.accelerator, self.config, self.temperature = accelerator, config, temperature
        self.model_config = model_config
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=config.lr, betas=tuple(config.adam_betas), eps=config.adam_eps,
                                      weight_decay=config.weight_decay)
        total_updates = config.max_steps * config.epochs_per_batch
        scheduler = get_scheduler(config.lr_scheduler, optimizer, num_warmup_steps=config.warmup_steps,
                                  num_training_steps=total_updates)
        self.model, self.optimizer, self.scheduler = accelerator.prepare(model, optimizer, scheduler)
        self.reference = reference.to(accelerator.device) if reference is not None else None
        self.model.train()

    @property
    def unwrapped(self) -> PreTrainedModel:
        return self.accelerator.unwrap_model(self.model)

    @torch.no_grad()
    def reference_logprobs(self, batch: RolloutBatch, micro_batch_size: int) -> Tensor:
        """[B, T] log-probs under the frozen reference (the LoRA base with adapters off when there is no copy)."""
        out = torch.zeros_like(batch.sampler_logp)
        groups = max(1, micro_batch_size // batch.group_size) * batch.group_size
        for start in range(0, batch.size, groups):
            rows = list(range(start, min(batch.size, start + groups)))
            sub = batch.select(rows)
            if self.reference is not None:
                logp, _ = token_logprobs(self.reference, sub, self.temperature)
            else:
                with self.unwrapped.disable_adapter():
                    logp, _ = token_logprobs(self.unwrapped, sub, self.temperature)
            out[start:start + len(rows), :logp.shape[1]] = logp.cpu()
        return out

    def update(self, batch: RolloutBatch, algorithm: Algorithm, max_tokens: int) -> dict[str, float]:
        """``epochs_per_batch`` optimiser updates on ``batch``; returns metrics averaged over this rank's tokens."""
        micro = batch.micro_batches(self.config.micro_batch_size)
        counts = torch.tensor([sum(float(m.completion_mask.sum()) for m in micro), float(sum(m.size for m in micro))])
        counts = self.accelerator.reduce(counts.to(self.accelerator.device), reduction="sum").cpu()
        num_tokens, num_seqs = max(float(counts[0]), 1.0), max(float(counts[1]), 1.0)
        world = self.accelerator.num_processes
        totals: dict[str, float] = {}
        weight_sum, loss_sum = 0.0, 0.0
        for _ in range(self.config.epochs_per_batch):
            for index, mb in enumerate(micro):
                last = index == len(micro) - 1
                sync = contextlib.nullcontext() if last else self.accelerator.no_sync(self.model)
                with sync:
                    logp, entropy = token_logprobs(self.model, mb, self.temperature, with_entropy=True,
                                                   entropy_grad=algorithm.needs_entropy)
                    if mb.old_logp is None:  # first pass: the weights have not moved yet, so this is pi_old
                        mb.old_logp = logp.detach().cpu()
                    device = logp.device
                    inputs = PolicyInputs(
                        logp=logp, old_logp=mb.old_logp.to(device), mask=mb.completion_mask.to(device),
                        advantages=mb.advantages.to(device), rewards=mb.rewards.to(device),
                        group_size=mb.group_size, num_tokens=num_tokens, num_sequences=num_seqs,
                        max_tokens=max_tokens, entropy=entropy,
                        ref_logp=None if mb.ref_logp is None else mb.ref_logp.to(device))
                    loss, stats = algorithm.loss(inputs)
                    # DDP averages gradients over ranks; the loss is already normalised by global counts
                    self.accelerator.backward(loss * world)
                tokens = float(mb.completion_mask.sum())
                weight_sum += tokens
                loss_sum += float(loss.detach()) * world  # partial sums of the global loss (see PolicyInputs)
                stats = {"entropy": _masked_mean(entropy.detach(), inputs.mask),
                         "sampler_logp_diff": _masked_mean((logp.detach().cpu() - mb.sampler_logp).abs().to(device),
                                                           inputs.mask), **stats}
                for key, value in stats.items():
                    totals[key] = totals.get(key, 0.0) + float(value) * tokens
            grad_norm = self._optimizer_step()
        metrics = {key: value / max(weight_sum, 1.0) for key, value in totals.items()}
        metrics["loss"] = loss_sum / self.config.epochs_per_batch
        metrics.update(grad_norm=grad_norm, lr=self.scheduler.get_last_lr()[0])
        return metrics

    def _optimizer_step(self) -> float:
        if self.config.max_grad_norm > 0:
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        else:
            norm = torch.norm(torch.stack([p.grad.norm() for p in self.model.parameters() if p.grad is not None]))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def rollout_weights(self) -> Iterator[tuple[str, Tensor]]:
        """Hugging Face-named weights for the rollout engine (LoRA merged on the fly). Lazy."""
        model = self.unwrapped
        if hasattr(model, "merge_adapter"):
            model.merge_adapter()
            try:
                base = model.get_base_model()
                for name, tensor in base.state_dict().items():
                    if "lora_" not in name:
                        yield name.replace("base_layer.", ""), tensor.detach()
            finally:
                model.unmerge_adapter()
        else:
            yield from ((name, tensor.detach()) for name, tensor in model.state_dict().items())


def _masked_mean(values: Tensor | None, mask: Tensor) -> Tensor:
    if values is None:
        return torch.tensor(0.0)
    return (values * mask).sum() / mask.sum().clamp(min=1)
