"""Demonstration-regularised RL (Tiapkin et al., ICLR 2024; design/algorithms.md §3).

Maximise E_{x, y~pi}[r(x, y)] - lambda * KL_seq(pi || pi_BC), where KL_seq = sum_t KL(pi_t || pi_BC,t) along pi's
own samples: the *reverse* KL, summed over each sequence's tokens (a token mean would rescale lambda by 1/length).

**The reference must be the BC policy.** Point ``model.reference`` at the behaviour-cloning (SFT on
demonstrations) checkpoint; when RL starts from that checkpoint (``model.path`` = the BC model) the default
reference (the starting policy) is already pi_BC. A base model as reference is *not* this method.

``kl_mode`` picks where the KL enters (lambda = ``kl_coef``):

- ``reward_k1`` (default; PPO/RLOO-RLHF style): r_i - lambda * sum_t k1_t in the reward, before the baseline, with
  k1 = log pi_sampler - log pi_BC on the sample (|d| clamped to ``kl_clamp``). No KL in the loss. Its expected
  gradient is the reverse-KL gradient: E[(sum_t k1_t) grad log pi(y)] = grad KL_seq(pi||pi_BC).
- ``loss_k2``: lambda * sum_t d_t^2/2 in the loss; expected gradient grad KL(pi||pi_BC) (reverse).
- ``loss_exact``: lambda * sum_t sum_v pi(v) log(pi(v)/pi_BC(v)) from the logits; the true reverse-KL gradient,
  lowest variance, one reference forward per micro-batch.
- ``loss_k3``: lambda * sum_t (e^d - d - 1); its expected gradient is grad KL(pi_BC||pi) (the *forward* KL). An
  engineering choice (OREAL, TRL GRPO's ``beta`` without bias correction), **not the paper's objective**: its
  optimum is not pi_BC * exp(r/lambda) / Z.

Advantages: ``rloo`` (r_i minus the mean of the other K-1 samples: unbiased, expected gradient grad E[r]) or
``group_mean`` (r_i minus the group mean = (K-1)/K * RLOO, expected gradient (1 - 1/K) grad E[r]). In ``reward_k1``
mode the KL is inside the advantage, so both only change the step size; in the loss modes ``group_mean``
shrinks the reward term against the KL term, i.e. the effective lambda is lambda * K/(K-1): prefer ``rloo``.
No std scaling: dividing by the group std would rescale lambda group by group.

Loss: PPO clipped surrogate (:class:`~alignrl.algorithms.policy_gradient.ClippedPGAlgorithm`) aggregated with
``loss_aggregation`` (default ``seq_mean_token_sum``: each sequence's token sum, averaged over sequences, which is
the gradient of E[r] itself); the KL loss term always uses ``seq_mean_token_sum``. With another
``loss_aggregation`` in a loss mode the reward term is rescaled (e.g. by 1/length) against the KL term.

lambda = 0 is plain RL (RLOO / group-mean PG). With ``log_kl`` (default) the reference is still run at lambda = 0 so
the KL is logged (the lambda = 0 point of a reward-KL frontier); ``log_kl: false`` skips that forward pass.

Metrics: ``kl_seq`` (mean over samples of sum_t k1_t on the rollout: an unbiased estimate of KL_seq(pi_old||pi_BC)),
``kl_seq_clamp_fraction`` (share of tokens whose |d| hit ``kl_clamp``), ``kl_penalty`` (lambda * kl_seq, reward_k1),
``shaped_reward_mean``; from the loss, ``kl`` is the per-token KL (k3 value, or exact in ``loss_exact``).
``Shaped.per_sample`` carries ``shaped_reward`` and ``kl_seq`` ([P, K]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from alignrl.algorithms.base import Algorithm, PolicyInputs, Shaped, ShapingInputs, masked_mean, masked_sum, \
    register_algorithm
from alignrl.algorithms.grpo import group_advantages
from alignrl.algorithms.kl import kl_per_token
from alignrl.algorithms.policy_gradient import LOSS_AGGREGATIONS, ClippedPGAlgorithm, ClippedPGParams, \
    LossAggregation, check_group_rewards, group_metrics
from alignrl.algorithms.rloo import leave_one_out_advantages

KLMode = Literal["reward_k1", "loss_k2", "loss_exact", "loss_k3"]
KL_MODES: tuple[str, ...] = ("reward_k1", "loss_k2", "loss_exact", "loss_k3")
ADVANTAGES: tuple[str, ...] = ("rloo", "group_mean")
_LOSS_ESTIMATOR = {"loss_k2": "k2", "loss_k3": "k3", "loss_exact": "exact", "reward_k1": "k3"}  # k3: logging only


@dataclass
class DemoKLParams:
    """Hyperparameters of demonstration-regularised RL (``algorithm: {name: demo_kl, ...}``)."""

    kl_coef: float = 0.05  # lambda: weight of the trajectory KL to the BC policy (model.reference); >= 0
    kl_mode: KLMode = "reward_k1"  # where the KL enters (module docstring); loss_k3 = forward KL, not the paper's
    advantage: Literal["rloo", "group_mean"] = "rloo"  # baseline; no std scaling (it would rescale lambda)
    clip_eps: float = 0.2  # PPO ratio clip
    kl_clamp: float = 20.0  # clamp |log pi_BC - log pi| per token (near-impossible tokens); clamped share is logged
    loss_aggregation: LossAggregation = "seq_mean_token_sum"  # of the surrogate; the KL term is always seq-sum
    log_kl: bool = True  # run the reference even at kl_coef = 0, so the KL is logged (frontier's lambda = 0 point)

    def __post_init__(self) -> None:
        if not self.kl_coef >= 0.0:
            raise ValueError(f"kl_coef must be >= 0, got {self.kl_coef}")
        if self.kl_mode not in KL_MODES:
            raise ValueError(f"kl_mode must be one of {KL_MODES}, got {self.kl_mode!r}")
        if self.advantage not in ADVANTAGES:
            raise ValueError(f"advantage must be one of {ADVANTAGES}, got {self.advantage!r}")
        if self.loss_aggregation not in LOSS_AGGREGATIONS:
            raise ValueError(f"loss_aggregation must be one of {LOSS_AGGREGATIONS}, got {self.loss_aggregation!r}")
        self.clipped_pg()  # validates clip_eps and kl_clamp

    def clipped_pg(self) -> ClippedPGParams:
        """The clipped-PG parameters the loss runs with: the KL in the loss only in the ``loss_*`` modes."""
        in_loss = self.kl_mode != "reward_k1"
        return ClippedPGParams(
            clip_eps=self.clip_eps, loss_aggregation=self.loss_aggregation,
            kl_coef=self.kl_coef if in_loss else 0.0, kl_estimator=_LOSS_ESTIMATOR[self.kl_mode],  # type: ignore
            kl_clamp=self.kl_clamp, kl_aggregation="seq_mean_token_sum")


def sequence_k1(sampler_logp: Tensor, ref_logp: Tensor, mask: Tensor, clamp: float) -> tuple[Tensor, Tensor]:
    """Per-sequence sum_t k1_t on the sample, k1 = log pi_sampler - log pi_ref with |d| clamped, [N, T] -> [N];
    also the [N, T] bool of clamped tokens (masked tokens are never clamped)."""
    k1 = kl_per_token(sampler_logp.double(), ref_logp.double(), "k1", clamp=clamp, mask=mask)
    valid = mask.bool()
    d = ref_logp.double() - sampler_logp.double()
    return masked_sum(k1, mask, dim=-1), torch.where(valid, d.abs() > clamp, torch.zeros_like(valid))


@register_algorithm("demo_kl")
class DemoKL(Algorithm):
    """KL-regularised RL toward the BC policy (trajectory reverse KL); the loss is :class:`ClippedPGAlgorithm`'s."""

    Params = DemoKLParams
    params: DemoKLParams

    def __init__(self, params: DemoKLParams):
        super().__init__(params)
        self.pg = ClippedPGAlgorithm(params.clipped_pg())

    @property
    def needs_reference(self) -> bool:
        return self.params.kl_coef > 0 or self.params.log_kl

    @property
    def needs_exact_kl(self) -> bool:
        return self.pg.needs_exact_kl

    def _advantages(self, rewards: Tensor) -> Tensor:
        if self.params.advantage == "rloo":
            return leave_one_out_advantages(rewards)
        return group_advantages(rewards, scale=False)

    @torch.no_grad()
    def shape(self, inputs: ShapingInputs) -> Shaped:
        """Shaped rewards r - lambda * sum_t k1_t (``reward_k1``; raw rewards otherwise) -> advantages [P, K]."""
        p, rewards = self.params, inputs.rewards
        check_group_rewards(rewards, "demo_kl")
        if inputs.ref_logp is None and p.kl_coef > 0:
            raise ValueError("demo_kl: kl_coef > 0 but ShapingInputs.ref_logp is None (the loop must compute "
                             "reference log-probs; model.reference should be the BC checkpoint)")
        metrics: dict[str, float] = {}
        kl_seq = torch.zeros_like(rewards, dtype=torch.float64)
        if inputs.ref_logp is not None:
            seq, clamped = sequence_k1(inputs.sampler_logp, inputs.ref_logp, inputs.mask, p.kl_clamp)
            kl_seq = seq.view_as(rewards)
            metrics["kl_seq"] = float(kl_seq.mean())
            metrics["kl_seq_clamp_fraction"] = float(masked_mean(clamped.double(), inputs.mask.double()))
        shaped = rewards.double()
        if p.kl_mode == "reward_k1":
            shaped = shaped - p.kl_coef * kl_seq
            if inputs.ref_logp is not None:
                metrics["kl_penalty"] = float(p.kl_coef * kl_seq.mean())
        shaped = shaped.to(torch.promote_types(rewards.dtype, torch.float32))
        adv = self._advantages(shaped)
        keep = torch.ones_like(rewards, dtype=torch.bool)
        metrics.update(group_metrics(rewards, adv), shaped_reward_mean=float(shaped.double().mean()))
        return Shaped(advantages=adv, keep=keep, metrics=metrics,
                      per_sample={"shaped_reward": shaped, "kl_seq": kl_seq.to(shaped.dtype)})

    def loss(self, inputs: PolicyInputs) -> tuple[Tensor, dict[str, Tensor]]:
        """Clipped surrogate (+ lambda * seq-summed KL in the ``loss_*`` modes); see ``ClippedPGAlgorithm.loss``.
        The ``kl`` stat is the per-token k3 value (unbiased on-policy) in every mode but ``loss_exact`` (exact)."""
        loss, stats = self.pg.loss(inputs)
        if self.params.kl_mode == "loss_k2" and inputs.ref_logp is not None:
            with torch.no_grad():
                k3 = kl_per_token(inputs.logp.detach(), inputs.ref_logp, "k3", self.params.kl_clamp, inputs.mask)
                stats["kl"] = masked_mean(k3, inputs.mask)
        return loss, stats
