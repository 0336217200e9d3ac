"""The learner: every trainable model of a run on Accelerate, and the update that turns a batch into steps.

One ``update`` per rollout batch: for each model that trains this step (auxiliary models first, then the policy),
``epochs_per_batch`` passes over the micro-batches with gradients accumulated through Accelerate's ``accumulate``
(under DeepSpeed through each model's own engine, which steps on the last micro-batch), then one optimiser step.
Every rank runs the same number of micro-batches: a rank with fewer kept samples runs zero-weight passes, so
collective gradient reductions never wait on a rank that skipped backward. Loss normalisers (tokens, sequences,
the algorithm's own counters) are global sums over all micro-batches and ranks, taken before any loss.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from torch import Tensor

from alignrl.algorithms.base import Algorithm, AuxInputs, CountInputs, PolicyInputs
from alignrl.algorithms.kl import exact_kl_per_token
from alignrl.batch import RolloutBatch
from alignrl.config.schema import TrainerConfig
from alignrl.learner.forward import chunked, completion_logits, logprobs_from_logits, token_scores
from alignrl.learner.reference import Reference
from alignrl.learner.trainable import POLICY, TrainableModel
from alignrl.learner.weights import weight_update
from alignrl.rollout.base import WeightUpdate


class Learner:
    """Owns the trainable models (``models["policy"]`` and any auxiliary ones) and the frozen reference."""

    def __init__(self, accelerator: Accelerator, models: dict[str, TrainableModel], config: TrainerConfig,
                 temperature: float, reference: Reference | None = None):
        if POLICY not in models:
            raise ValueError("the learner needs a model named 'policy'")
        self.accelerator, self.models, self.config = accelerator, models, config
        self.temperature, self.reference = temperature, reference

    @property
    def policy(self) -> TrainableModel:
        return self.models[POLICY]

    @property
    def unwrapped(self):
        return self.policy.unwrapped

    def reference_logprobs(self, batch: RolloutBatch) -> Tensor:
        if self.reference is None:
            raise RuntimeError("the algorithm needs reference log-probs but the run has no reference model")
        return self.reference.logprobs(batch, self.config.micro_batch_size)

    def auxiliary_outputs(self, batch: RolloutBatch) -> dict[str, Tensor]:
        """Per-token outputs [B, T] of every auxiliary model on ``batch``, before any update (for ``shape``)."""
        return {name: chunked(batch, self.config.micro_batch_size, lambda sub, m=model: token_scores(m.module, sub))
                for name, model in self.models.items() if name != POLICY}

    def weight_update(self, version: int, bucket_mb: float) -> WeightUpdate:
        return weight_update(self.unwrapped, version, int(bucket_mb * 2**20))

    # -- the update ------------------------------------------------------------------------------------------------

    def update(self, batch: RolloutBatch, algorithm: Algorithm, step: int, max_tokens: int) -> dict[str, float]:
        """Optimiser steps of the models that train at ``step``; returns metrics (``aux/<name>/...`` for
        auxiliary models). Keys ending in ``_max`` / ``_min`` are extremes, the rest token-weighted means."""
        acc = self.accelerator
        micro = batch.micro_batches(self.config.micro_batch_size)
        padding = _zero_weight(batch)
        count = torch.tensor([float(len(micro))], device=acc.device)
        passes = max(int(acc.reduce(count, reduction="max").item()), 1)
        counts = self._global_counts(micro, padding, algorithm)
        # nothing kept on any rank: no optimiser step at all (Adam's momentum would still move the weights)
        training = algorithm.trains(step) if counts["kept_sequences"] > 0 else set()
        metrics: dict[str, float] = {}
        order = [name for name in self.models if name != POLICY] + [POLICY]
        for name in order:
            if name not in training:
                continue
            model = self.models[name]
            stats = _Stats()
            for _ in range(self.config.epochs_per_batch):
                acc.gradient_accumulation_steps = passes
                acc.step = 0  # Accelerate's accumulation counter: sync (and step) on the last of ``passes``
                for index in range(passes):
                    real = index < len(micro)
                    mb = micro[index] if real else padding
                    with model.accumulate():
                        if name == POLICY:
                            loss, step_stats = self._policy_loss(mb, algorithm, counts, max_tokens, real)
                        else:
                            loss, step_stats = self._aux_loss(name, mb, algorithm, counts, real)
                        # the loss is already this micro-batch's share of the global normalisers
                        model.backward(loss * model.loss_scale(passes), last=index == passes - 1)
                    if real:
                        stats.add(step_stats, float(mb.completion_mask.sum()), float(loss.detach()) *
                                  acc.num_processes)
                stats.grad_norms.append(model.step())
            prefix = "" if name == POLICY else f"aux/{name}/"
            metrics.update({prefix + k: v for k, v in stats.result(self.config.epochs_per_batch).items()})
            metrics[prefix + "lr"] = model.lr
        if POLICY not in training:
            metrics["lr"] = self.policy.lr
        metrics["kept_fraction"] = counts["kept_sequences"] / max(batch.size * acc.num_processes, 1)
        return metrics

    def _global_counts(self, micro: list[RolloutBatch], padding: RolloutBatch, algorithm: Algorithm
                       ) -> dict[str, float]:
        keys = sorted(algorithm.counts(_count_inputs(padding)))
        totals = torch.zeros(2 + len(keys), dtype=torch.float64)
        for mb in micro:
            extra = algorithm.counts(_count_inputs(mb))
            totals += torch.tensor([float(mb.completion_mask.sum()), float(mb.size),
                                    *(float(extra[k]) for k in keys)], dtype=torch.float64)
        totals = self.accelerator.reduce(totals.to(self.accelerator.device), reduction="sum").cpu()
        return {"tokens": max(float(totals[0]), 1.0), "sequences": max(float(totals[1]), 1.0),
                "kept_sequences": float(totals[1]),
                **{k: float(v) for k, v in zip(keys, totals[2:])}}

    def _policy_loss(self, mb: RolloutBatch, algorithm: Algorithm, counts: dict[str, float], max_tokens: int,
                     real: bool) -> tuple[Tensor, dict[str, Tensor]]:
        logits = completion_logits(self.policy.module, mb, self.temperature)
        # every rank runs the reference too, padding passes included: under ZeRO-3 its forward is a collective
        ref_logits = self.reference.logits(mb) if algorithm.needs_exact_kl else None
        logp, entropy = logprobs_from_logits(logits, mb.completion_ids, with_entropy=True,
                                             entropy_grad=algorithm.needs_entropy)
        if not real:
            return logits.sum() * 0.0, {}  # joins the collective with a zero gradient
        if mb.old_logp is None:  # first pass: the weights have not moved yet, so this is pi_old
            mb.old_logp = logp.detach().cpu()
        device = logp.device
        exact_kl = None
        if ref_logits is not None:
            exact_kl = exact_kl_per_token(logits, ref_logits.to(device), mb.completion_mask.to(device))
        to = (lambda t: None if t is None else t.to(device))
        mask = mb.completion_mask.to(device)
        inputs = PolicyInputs(
            logp=logp, old_logp=mb.old_logp.to(device), mask=mask, advantages=mb.advantages.to(device),
            rewards=mb.rewards.to(device), group_size=mb.group_size, num_tokens=counts["tokens"],
            num_sequences=counts["sequences"], max_tokens=max_tokens, ref_logp=to(mb.ref_logp),
            token_weights=to(mb.token_weights), entropy=entropy, group_ids=mb.group_ids.to(device),
            sampler_logp=mb.sampler_logp.to(device), logits=logits if algorithm.needs_logits else None,
            exact_kl=exact_kl, counts=counts, per_sample={k: v.to(device) for k, v in mb.per_sample.items()},
            per_token={k: v.to(device) for k, v in mb.per_token.items()})
        loss, stats = algorithm.loss(inputs)
        with torch.no_grad():
            stats = {"entropy": _masked_mean(entropy, mask),
                     "sampler_logp_diff": _masked_mean((logp - inputs.sampler_logp).abs(), mask),
                     "sampler_logp_diff_max": (logp - inputs.sampler_logp).abs().masked_fill(~mask.bool(), 0).max(),
                     **stats}
        return loss, stats

    def _aux_loss(self, name: str, mb: RolloutBatch, algorithm: Algorithm, counts: dict[str, float], real: bool
                  ) -> tuple[Tensor, dict[str, Tensor]]:
        outputs = token_scores(self.models[name].module, mb)
        if not real:
            return outputs.sum() * 0.0, {}
        device = outputs.device
        inputs = AuxInputs(
            outputs=outputs, mask=mb.completion_mask.to(device), advantages=mb.advantages.to(device),
            rewards=mb.rewards.to(device), group_ids=mb.group_ids.to(device), num_tokens=counts["tokens"],
            num_sequences=counts["sequences"], counts=counts,
            per_sample={k: v.to(device) for k, v in mb.per_sample.items()},
            per_token={k: v.to(device) for k, v in mb.per_token.items()})
        return algorithm.auxiliary_loss(name, inputs)


class _Stats:
    """Token-weighted means of micro-batch statistics (``*_max`` / ``*_min`` keys keep the extreme)."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.weight, self.loss = 0.0, 0.0
        self.grad_norms: list[float] = []

    def add(self, stats: dict[str, Tensor], tokens: float, loss: float) -> None:
        self.weight += tokens
        self.loss += loss
        for key, value in stats.items():
            value = float(value)
            if key.endswith("_max"):
                self.sums[key] = max(self.sums.get(key, value), value)
            elif key.endswith("_min"):
                self.sums[key] = min(self.sums.get(key, value), value)
            else:
                self.sums[key] = self.sums.get(key, 0.0) + value * tokens

    def result(self, epochs: int) -> dict[str, float]:
        out = {k: (v if k.endswith(("_max", "_min")) else v / max(self.weight, 1.0)) for k, v in self.sums.items()}
        out["loss"] = self.loss / epochs
        out["grad_norm"] = self.grad_norms[-1] if self.grad_norms else 0.0
        return out


def _zero_weight(batch: RolloutBatch) -> RolloutBatch:
    """A one-row micro-batch with an all-zero mask: the pass a rank runs when it has nothing (more) to train."""
    pad = batch.select([0])
    pad.completion_mask = torch.zeros_like(pad.completion_mask)
    return pad


def _count_inputs(mb: RolloutBatch) -> CountInputs:
    return CountInputs(mask=mb.completion_mask, advantages=_or_zeros(mb.advantages, mb.size),
                       rewards=_or_zeros(mb.rewards, mb.size), group_ids=mb.group_ids, per_sample=mb.per_sample,
                       per_token=mb.per_token)


def _or_zeros(t: Tensor | None, n: int) -> Tensor:
    return torch.zeros(n) if t is None else t


def _masked_mean(values: Tensor | None, mask: Tensor) -> Tensor:
    if values is None:
        return torch.tensor(0.0)
    return (values.detach() * mask).sum() / mask.sum().clamp(min=1)

