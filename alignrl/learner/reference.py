"""The frozen reference policy for KL terms, as an inference-only model of the training backend.

- A separate copy (``model.reference`` or the starting policy) is moved to the device, or, under DeepSpeed
  ZeRO-3, wrapped as an inference engine (TRL's ``prepare_deepspeed``) so it is sharded like the policy instead
  of being a full copy on every rank (under ZeRO-2 it is an unsharded inference engine: a copy per rank).
- With LoRA and no separate reference, the reference is the policy's base with the adapters switched off.

Its forward passes run under the same ``accelerator.autocast()`` as the policy's, so at initialisation the KL is
exactly 0 under bf16 mixed precision on GPU, as on CPU.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType
from torch import Tensor
from transformers import PreTrainedModel

from alignrl.batch import RolloutBatch
from alignrl.learner.forward import chunked, completion_logits, token_logprobs
from alignrl.learner.zero import resolve_plugin_config


class Reference:
    def __init__(self, accelerator: Accelerator, model: PreTrainedModel | None, policy: PreTrainedModel,
                 temperature: float):
        self.accelerator, self.policy, self.temperature = accelerator, policy, temperature
        if model is not None and accelerator.distributed_type == DistributedType.DEEPSPEED:
            from trl.models import prepare_deepspeed

            resolve_plugin_config(accelerator)  # DeepSpeed refuses a config with 'auto' batch sizes
            model = prepare_deepspeed(model, accelerator)
        elif model is not None:
            model = model.to(accelerator.device)
        self.model = model

    def _run(self, fn, batch: RolloutBatch) -> Tensor:
        with torch.no_grad(), self.accelerator.autocast():
            if self.model is not None:
                return fn(self.model, batch)
            with self.policy.disable_adapter():
                return fn(self.policy, batch)

    def logprobs(self, batch: RolloutBatch, micro_batch_size: int) -> Tensor:
        """[B, T] reference log-probs of ``batch``, computed in chunks of whole groups, on the CPU."""
        return chunked(batch, micro_batch_size,
                       lambda sub: self._run(lambda m, b: token_logprobs(m, b, self.temperature)[0], sub))

    def logits(self, batch: RolloutBatch) -> Tensor:
        """[B, T, V] tempered reference logits of one micro-batch (for the exact per-token KL)."""
        return self._run(lambda m, b: completion_logits(m, b, self.temperature), batch)
