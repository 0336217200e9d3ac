"""OREAL (Lyu et al. 2025, arXiv 2502.06781; design/algorithms.md §2): behaviour cloning on positive samples,
reshaped policy gradient on negative ones, token-level importance weights from a co-trained token reward model.

Per step (official ``train_oreal.py``, second reading of commit 2859cc0):

1. advantages over all K samples of a prompt, *before* any filter: RLOO r_i - mean_{j != i} r_j (default) or GRPO;
2. groups whose samples are all correct or all wrong are dropped; of each kept group one random correct and one
   random incorrect sample train (the draw is seeded by (``pair_seed``, step, prompt row): a resumed run and any
   split over ranks draw the same pair);
3. the token RM (a copy of the policy with a one-output head) scores every completion token at the position that
   *predicts* it; q_t = sigmoid(mean of the scores up to t), w+ = max(2q - 1, 0) on correct samples and
   w- = max(1 - 2q, 0) on incorrect ones (detached). An untrained RM (q = 0.5) gives weight 0, so only the KL
   trains the policy: for the first ``actor_freeze_steps`` steps only the RM trains (the RM trains every step);
4. loss, with N+ / N- / N the kept positive / negative / all completion tokens of the whole step (all ranks)::

       L = positive_factor / N+ * sum_{y+} sum_t w+_t * (-log pi_t) * A+              (behaviour cloning)
         + negative_factor / N- * sum_{y-} sum_t -exp(logp_t - sg(logp_t)) * A- * w-_t  (reshaped negative PG)
         + kl_coef / N * sum_{kept} sum_t k3_t                                          (KL to the frozen start)

5. the token RM minimises BCE(mean_t s_t, 1[r > 0]) over the kept samples, divided by the step's kept samples.

Rewards are expected to be +-1 (``math`` reward with ``mode: pm1``; truncation and grader failures must be scored
-1 by the reward, e.g. ``truncated_score: -1``). A sample is *correct* when r > 0 (for +-1 and 0/1 rewards the
token-RM label 1[r > 0] is max(r, 0)); ``binarize`` maps rewards to +-1 by that rule before the advantages, so a
0/1 reward trains on the official scale. Every ingredient is a switch; Table 2's ablation ladder is
REINFORCE (``behaviour_cloning``, ``reward_shaping``, ``pair_filter``, ``filter_groups``, ``token_rm`` all off) ->
+ ``reward_shaping`` -> + ``behaviour_cloning`` -> + ``token_rm`` (with the pair filter). With a switch off:

- ``behaviour_cloning=False``: correct samples get the plain PG term -exp(logp - sg(logp)) * A * w, normalised by N;
- ``reward_shaping=False``: incorrect samples get the same plain term normalised by N (no ``negative_factor``).

Both off is REINFORCE with RLOO advantages and a token-mean loss: on-policy exactly RLOO's loss with
``loss_aggregation: token_mean`` (same value and gradient). The BC term and the PG term have the same gradient
per token (-A w grad log pi); the switches change the normalisers and factors, not the direction.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor
from torch.nn.functional import binary_cross_entropy_with_logits

from alignrl.algorithms.base import (Algorithm, AuxInputs, AuxiliaryModel, CountInputs, PolicyInputs, Shaped,
                                     ShapingInputs, masked_mean, masked_sum, register_algorithm)
from alignrl.algorithms.grpo import group_advantages
from alignrl.algorithms.kl import KL_ESTIMATORS, KLEstimator, kl_per_token
from alignrl.algorithms.policy_gradient import check_group_rewards, group_metrics

TOKEN_RM = "token_rm"
CORRECT = "correct"  # Shaped.per_sample key: 1.0 for correct (r > 0) samples
COUNT_KEYS = ("pos_tokens", "neg_tokens", "kept_tokens", "kept_sequences")


def _f32(x: Tensor) -> Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _zero_masked(x: Tensor, mask: Tensor) -> Tensor:
    """Masked entries -> 0 before any arithmetic, so NaN/inf there reach neither values nor gradients."""
    return torch.where(mask.bool(), x, torch.zeros_like(x))


# ---- pure pieces ------------------------------------------------------------------------------------------------

def rloo_advantages(rewards: Tensor) -> Tensor:
    """A_i = r_i - (sum_{j != i} r_j) / (K - 1), [P, K] -> [P, K]; sums to 0 per group, exactly 0 in a group of equal
    rewards. With +-1 rewards and n+ correct of K: A+ = 2(K - n+)/(K - 1), A- = -2 n+/(K - 1). K = 1 has no
    baseline: the advantages are 0 (no division by zero)."""
    r = _f32(rewards)
    k = r.shape[-1]
    if k < 2:
        return torch.zeros_like(r)
    adv = r - (r.sum(-1, keepdim=True) - r) / (k - 1)
    constant = (rewards == rewards[..., :1]).all(-1, keepdim=True)
    return torch.where(constant, torch.zeros_like(adv), adv)


def mixed_groups(correct: Tensor) -> Tensor:
    """[P, K] bool -> [P] bool: groups holding at least one correct and one incorrect sample (0 < p < 1)."""
    return correct.any(-1) & (~correct).any(-1)


def pair_seed(seed: int, step: int, prompt_index: int) -> int:
    """A 63-bit generator seed for one group's pair draw, from (seed, step, dataset row) only."""
    digest = hashlib.blake2b(f"oreal-pair/{seed}/{step}/{prompt_index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def pair_filter(correct: Tensor, seeds: list[int]) -> Tensor:
    """Keep one random correct and one random incorrect sample per mixed group, [P, K] bool -> [P, K] bool.

    ``seeds[g]`` seeds group g's draw (see :func:`pair_seed`); a group without both kinds keeps nothing."""
    keep = torch.zeros_like(correct, dtype=torch.bool)
    for g in mixed_groups(correct).nonzero().flatten().tolist():
        gen = torch.Generator().manual_seed(seeds[g])
        for kind in (correct[g], ~correct[g]):
            options = kind.nonzero().flatten()
            keep[g, options[torch.randint(len(options), (1,), generator=gen)]] = True
    return keep


def cumulative_mean(scores: Tensor, mask: Tensor) -> Tensor:
    """Mean of the scores over the valid tokens up to and including t, [B, T] -> [B, T] (0 on masked tokens)."""
    valid = mask.bool()
    total = torch.cumsum(_zero_masked(_f32(scores), valid), dim=-1)
    count = torch.cumsum(valid.to(total.dtype), dim=-1).clamp(min=1)
    return _zero_masked(total / count, valid)


def token_rm_weights(scores: Tensor, mask: Tensor, thr: float = 0.5) -> tuple[Tensor, Tensor]:
    """Threshold weights from token-RM scores [B, T]: q = sigmoid(cumulative mean), returns (w_pos, w_neg), detached.

    w_pos = max((q - thr) / (1 - thr), 0), w_neg = max((thr - q) / thr, 0): at thr = 0.5 (official) these are
    max(2q - 1, 0) and max(1 - 2q, 0). Masked tokens get 0."""
    q = torch.sigmoid(cumulative_mean(scores.detach(), mask))
    w_pos = ((q - thr) / (1.0 - thr)).clamp(min=0.0)
    w_neg = ((thr - q) / thr).clamp(min=0.0)
    return _zero_masked(w_pos, mask), _zero_masked(w_neg, mask)


def token_rm_topk_weights(scores: Tensor, mask: Tensor, fraction: float) -> tuple[Tensor, Tensor]:
    """Top-k weights (the ``topk_rescale`` alternative, reconstructed): per row, weight 1 on the ceil(fraction * L)
    tokens with the highest q (w_pos) / the lowest q (w_neg), 0 elsewhere and on masked tokens."""
    q = torch.sigmoid(cumulative_mean(scores.detach(), mask))
    valid = mask.bool()
    k = torch.ceil(fraction * valid.sum(-1, keepdim=True).to(q.dtype))

    def top(values: Tensor) -> Tensor:
        ranked = torch.where(valid, values, torch.full_like(values, -math.inf))
        order = torch.argsort(ranked, dim=-1, descending=True, stable=True)
        rank = torch.argsort(order, dim=-1, stable=True)
        return ((rank < k) & valid).to(q.dtype)

    return top(q), top(-q)


def token_rm_loss(scores: Tensor, mask: Tensor, label: Tensor) -> Tensor:
    """Per-sequence BCE(masked mean of the scores, label), [B, T], [B, T], [B] in {0, 1} -> [B]."""
    mean = masked_mean(_f32(scores), mask, dim=-1)
    return binary_cross_entropy_with_logits(mean, _f32(label).to(mean.dtype), reduction="none")


def oreal_policy_loss(
    logp: Tensor, ref_logp: Tensor | None, mask: Tensor, is_pos: Tensor, adv: Tensor, w_tok: Tensor | None = None,
    *, n_pos_tok: float, n_neg_tok: float, n_tok: float, pos_factor: float = 1.0, neg_factor: float = 0.5,
    kl_coef: float = 0.01, kl: KLEstimator = "k3", kl_clamp: float | None = 20.0, kl_tokens: float | None = None,
    behaviour_cloning: bool = True, reward_shaping: bool = True,
) -> tuple[Tensor, dict[str, Tensor]]:
    """This micro-batch's share of the OREAL loss (module docstring) and its detached parts.

    Args:
        logp, ref_logp, mask: [B, T] policy (with grad) and reference log-probs, completion mask.
        is_pos: [B] correct samples; adv: [B] pre-filter advantages; w_tok: [B, T] detached token weights
            (w+ on positive rows, w- on negative ones; None = 1).
        n_pos_tok, n_neg_tok, n_tok: GLOBAL token counts of the step (positive, negative, all kept samples).
        kl_tokens: the KL normaliser (default ``n_tok``; the pre-2859cc0 code used ``n_neg_tok``).
    Returns:
        (loss, {"positive", "negative", "kl"} terms, each already globally normalised).
    """
    valid = mask.bool()
    logp32 = _zero_masked(_f32(logp), valid)
    w = torch.ones_like(logp32) if w_tok is None else _zero_masked(_f32(w_tok), valid).detach()
    a = _f32(adv).detach().to(logp32.dtype)[:, None]
    pos = is_pos.bool()[:, None] & valid
    neg = ~is_pos.bool()[:, None] & valid
    pg = -torch.exp(logp32 - logp32.detach()) * a * w  # value -A w, gradient -A w grad log pi
    if behaviour_cloning:
        positive = pos_factor * masked_sum(-logp32 * a * w, pos) / max(n_pos_tok, 1.0)
    else:
        positive = masked_sum(pg, pos) / max(n_tok, 1.0)
    if reward_shaping:
        negative = neg_factor * masked_sum(pg, neg) / max(n_neg_tok, 1.0)
    else:
        negative = masked_sum(pg, neg) / max(n_tok, 1.0)
    loss = positive + negative
    kl_term = torch.zeros((), dtype=logp32.dtype, device=logp32.device)
    if kl_coef > 0:
        if ref_logp is None:
            raise ValueError("oreal_policy_loss: kl_coef > 0 needs ref_logp")
        k = kl_per_token(logp32, _f32(ref_logp), kl, kl_clamp, mask=valid)
        kl_term = kl_coef * masked_sum(k, valid) / max(n_tok if kl_tokens is None else kl_tokens, 1.0)
        loss = loss + kl_term
    return loss, {"positive": positive.detach(), "negative": negative.detach(), "kl": kl_term.detach()}


# ---- registry entry ---------------------------------------------------------------------------------------------

@dataclass
class OREALParams:
    """OREAL hyperparameters (defaults: the official ``oreal_w_tokenrm`` config)."""

    kl_coef: float = 0.01  # k3 KL to the frozen start over all kept tokens; > 0 loads the reference
    kl_estimator: KLEstimator = "k3"  # official "unbias" = k3, "mse" = k2, "kl" = k1 (zero expected gradient)
    kl_clamp: float = 20.0  # |ref_logp - logp| bound before the estimator
    kl_normaliser: Literal["all", "negative"] = "all"  # N (2nd reading) or N- (the code before commit 2859cc0)
    positive_factor: float = 1.0
    negative_factor: float = 0.5
    advantage: Literal["rloo", "grpo"] = "rloo"  # over all K samples, before filtering
    binarize: bool = False  # rewards -> +1 if r > 0 else -1 before the advantages (a 0/1 reward on OREAL's scale)
    filter_groups: bool = True  # drop all-correct / all-wrong groups
    pair_filter: bool = True  # one random correct + one random incorrect per mixed group (implies filter_groups)
    pair_seed: int = 0
    behaviour_cloning: bool = True
    reward_shaping: bool = True
    token_rm: bool = True  # co-train the token-level RM and weight tokens by it (False = weights 1, no RM)
    token_rm_init: str = "policy"  # "policy" = a copy of the starting policy, or a model folder / hub name
    token_rm_lr: float = 2e-6
    token_rm_lr_scheduler: str = "cosine"  # official: cosine 2e-6 -> 4e-7; transformers' names cannot set a floor
    token_rm_warmup_steps: int = 10
    token_rm_weight_decay: float = 0.01
    token_rm_max_grad_norm: float = 1.0
    actor_freeze_steps: int = 10  # only the token RM trains in steps 1..N (ignored without the token RM)
    token_weighting: Literal["threshold", "topk"] = "threshold"
    threshold: float = 0.5
    topk_fraction: float = 0.25  # official correct/incorrect_topk_ratio

    def __post_init__(self) -> None:
        if self.kl_estimator not in KL_ESTIMATORS:
            raise ValueError(f"kl_estimator must be one of {KL_ESTIMATORS}, got {self.kl_estimator!r}")
        if self.kl_normaliser not in ("all", "negative"):
            raise ValueError(f"kl_normaliser must be 'all' or 'negative', got {self.kl_normaliser!r}")
        if self.advantage not in ("rloo", "grpo"):
            raise ValueError(f"advantage must be 'rloo' or 'grpo', got {self.advantage!r}")
        if self.token_weighting not in ("threshold", "topk"):
            raise ValueError(f"token_weighting must be 'threshold' or 'topk', got {self.token_weighting!r}")
        for name in ("kl_coef", "positive_factor", "negative_factor", "token_rm_weight_decay",
                     "token_rm_max_grad_norm"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not self.kl_clamp > 0 or not self.token_rm_lr > 0:
            raise ValueError("kl_clamp and token_rm_lr must be > 0")
        if self.actor_freeze_steps < 0 or self.token_rm_warmup_steps < 0:
            raise ValueError("actor_freeze_steps and token_rm_warmup_steps must be >= 0")
        if not 0.0 < self.threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.topk_fraction <= 1.0:
            raise ValueError(f"topk_fraction must be in (0, 1], got {self.topk_fraction}")


@register_algorithm("oreal")
class OREAL(Algorithm):
    """OREAL: ``shape`` (advantages, filters, token weights), ``counts`` (N+, N-, N, kept samples), ``loss``
    (BC + reshaped negative PG + KL) and the token RM's ``auxiliary_loss``; see the module docstring."""

    Params = OREALParams
    params: OREALParams

    @property
    def needs_reference(self) -> bool:
        return self.params.kl_coef > 0

    def auxiliary_models(self) -> list[AuxiliaryModel]:
        p = self.params
        if not p.token_rm:
            return []
        return [AuxiliaryModel(name=TOKEN_RM, init=p.token_rm_init, head="scalar", lr=p.token_rm_lr,
                               lr_scheduler=p.token_rm_lr_scheduler, warmup_steps=p.token_rm_warmup_steps,
                               weight_decay=p.token_rm_weight_decay, max_grad_norm=p.token_rm_max_grad_norm)]

    def trains(self, step: int) -> set[str]:
        """The token RM every step; the policy after ``actor_freeze_steps`` (from step 1 without the RM)."""
        if not self.params.token_rm:
            return {"policy"}
        return {TOKEN_RM} if step <= self.params.actor_freeze_steps else {TOKEN_RM, "policy"}

    def _keep(self, correct: Tensor, inputs: ShapingInputs) -> Tensor:
        p = self.params
        n_prompts = correct.shape[0]
        if p.pair_filter:
            rows = inputs.prompt_index.tolist() if inputs.prompt_index is not None else list(range(n_prompts))
            return pair_filter(correct, [pair_seed(p.pair_seed, inputs.step, int(r)) for r in rows])
        keep = torch.ones_like(correct, dtype=torch.bool)
        if p.filter_groups:
            keep &= mixed_groups(correct)[:, None]
        return keep

    @torch.no_grad()
    def shape(self, inputs: ShapingInputs) -> Shaped:
        """Pre-filter advantages, the kept samples, token weights and ``per_sample["correct"]``."""
        p, rewards = self.params, inputs.rewards
        check_group_rewards(rewards, "OREAL")
        n_prompts, k = rewards.shape
        if inputs.mask.shape[0] != n_prompts * k:
            raise ValueError(f"OREAL.shape: mask has {inputs.mask.shape[0]} rows, rewards are {n_prompts}x{k}")
        correct = rewards > 0
        if p.binarize:
            rewards = torch.where(correct, 1.0, -1.0).to(torch.promote_types(rewards.dtype, torch.float32))
        adv = rloo_advantages(rewards) if p.advantage == "rloo" else group_advantages(rewards, scale=True)
        keep = self._keep(correct, inputs)
        rows_correct = correct.reshape(-1)[:, None]
        token_weights = None
        metrics = group_metrics(rewards, adv)
        kept_tokens = inputs.mask.bool() & keep.reshape(-1)[:, None]
        if p.token_rm:
            if TOKEN_RM not in inputs.aux_outputs:
                raise ValueError("OREAL with token_rm needs ShapingInputs.aux_outputs['token_rm'] (the learner's "
                                 "per-token scores of the auxiliary model)")
            scores = inputs.aux_outputs[TOKEN_RM]
            if p.token_weighting == "threshold":
                w_pos, w_neg = token_rm_weights(scores, inputs.mask, p.threshold)
            else:
                w_pos, w_neg = token_rm_topk_weights(scores, inputs.mask, p.topk_fraction)
            token_weights = torch.where(rows_correct, w_pos, w_neg)
            for name, rows in (("token_weight_pos_mean", rows_correct), ("token_weight_neg_mean", ~rows_correct)):
                metrics[name] = float(masked_mean(token_weights.double(), (kept_tokens & rows).double()))
        metrics.update({
            "correct_fraction": float(correct.double().mean()),
            "mixed_group_fraction": float(mixed_groups(correct).double().mean()),
            "kept_group_fraction": float(keep.any(-1).double().mean()),
            "kept_sample_fraction": float(keep.double().mean()),
        })
        return Shaped(advantages=adv, keep=keep, metrics=metrics, token_weights=token_weights,
                      per_sample={CORRECT: correct.to(adv.dtype)})

    def counts(self, inputs: CountInputs) -> dict[str, Tensor]:
        """N+ (``pos_tokens``), N- (``neg_tokens``), N (``kept_tokens``) and the kept samples of this micro-batch."""
        lengths = inputs.mask.double().sum(-1)
        correct = self._correct(inputs.per_sample, "counts").double()
        sequences = torch.tensor(float(lengths.numel()), dtype=torch.float64)
        return {"pos_tokens": (lengths * correct).sum(), "neg_tokens": (lengths * (1 - correct)).sum(),
                "kept_tokens": lengths.sum(), "kept_sequences": sequences}

    @staticmethod
    def _correct(per_sample: dict[str, Tensor], who: str) -> Tensor:
        if CORRECT not in per_sample:
            raise ValueError(f"OREAL.{who} needs per_sample['{CORRECT}'] (set by OREAL.shape)")
        return per_sample[CORRECT]

    @staticmethod
    def _global(counts: dict[str, float], local: dict[str, Tensor]) -> dict[str, float]:
        missing = [k for k in COUNT_KEYS if k not in counts]
        if missing:
            raise ValueError(f"OREAL: PolicyInputs.counts lacks {missing} (the learner must sum OREAL.counts over "
                             f"all micro-batches and ranks)")
        for key in COUNT_KEYS:
            if float(local[key]) > float(counts[key]) + 1e-6:
                raise ValueError(f"OREAL: global counts['{key}']={counts[key]} is below this micro-batch's "
                                 f"{float(local[key])} (counts must be summed over all micro-batches)")
        return {k: float(counts[k]) for k in COUNT_KEYS}

    def loss(self, inputs: PolicyInputs) -> tuple[Tensor, dict[str, Tensor]]:
        """This micro-batch's share of the step loss (global N+, N-, N) and detached per-token stats: ``kl`` (mean
        estimate), ``logp_pos_mean`` / ``logp_neg_mean`` (mean log-prob of correct / incorrect tokens)."""
        p, mask = self.params, inputs.mask
        if inputs.logp.shape != mask.shape or inputs.advantages.shape != mask.shape[:1]:
            raise ValueError(f"logp {tuple(inputs.logp.shape)} must match mask {tuple(mask.shape)} and advantages "
                             f"{tuple(inputs.advantages.shape)} must be [B]")
        correct = self._correct(inputs.per_sample, "loss").bool()
        n = self._global(inputs.counts, self.counts(CountInputs(
            mask=mask, advantages=inputs.advantages, rewards=inputs.rewards, group_ids=inputs.group_ids,
            per_sample=inputs.per_sample, per_token=inputs.per_token)))
        if p.token_rm and inputs.token_weights is None:
            raise ValueError("OREAL with token_rm needs PolicyInputs.token_weights (from OREAL.shape)")
        loss, _ = oreal_policy_loss(
            inputs.logp, inputs.ref_logp, mask, correct, inputs.advantages, inputs.token_weights,
            n_pos_tok=n["pos_tokens"], n_neg_tok=n["neg_tokens"], n_tok=n["kept_tokens"],
            pos_factor=p.positive_factor, neg_factor=p.negative_factor, kl_coef=p.kl_coef, kl=p.kl_estimator,
            kl_clamp=p.kl_clamp, kl_tokens=n["neg_tokens"] if p.kl_normaliser == "negative" else None,
            behaviour_cloning=p.behaviour_cloning, reward_shaping=p.reward_shaping)
        with torch.no_grad():
            valid = mask.bool()
            logp = _zero_masked(_f32(inputs.logp.detach()), valid)
            stats = {"positive_share": correct.double().mean(),
                     "logp_pos_mean": masked_mean(logp, valid & correct[:, None]),
                     "logp_neg_mean": masked_mean(logp, valid & ~correct[:, None])}
            if inputs.ref_logp is not None:
                stats["kl"] = masked_mean(kl_per_token(logp, _f32(inputs.ref_logp), p.kl_estimator, p.kl_clamp,
                                                       mask=valid), valid)
        return loss, stats

    def auxiliary_loss(self, name: str, inputs: AuxInputs) -> tuple[Tensor, dict[str, Tensor]]:
        """Token RM: sum over kept samples of BCE(mean score, 1[r > 0]) / the step's kept samples (all ranks)."""
        if name != TOKEN_RM:
            raise ValueError(f"OREAL has no auxiliary model '{name}'")
        label = (inputs.rewards > 0).to(torch.float32)
        per_seq = token_rm_loss(inputs.outputs, inputs.mask, label)
        total = float(inputs.counts.get("kept_sequences", inputs.num_sequences))
        with torch.no_grad():
            mean = masked_mean(_f32(inputs.outputs.detach()), inputs.mask, dim=-1)
            stats = {"bce": per_seq.detach().mean(), "accuracy": ((mean > 0) == label.bool()).double().mean(),
                     "score_mean": mean.mean()}
        return per_seq.sum() / max(total, 1.0), stats
