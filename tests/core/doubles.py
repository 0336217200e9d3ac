"""Test doubles of the core contracts' consumers: algorithms with an auxiliary model, token weights and counters,
a filter, a difficulty-adaptive prompt sampler, a stateful reward and a per-prompt-seeded engine.

Each is a small but real implementation of its interface (registered like a user's would be), so the tests prove
the contracts that OREAL, P3O, demonstration-KL, model-based rewards and resampling will plug into.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import torch
from torch import Tensor

from alignrl.algorithms import (AuxInputs, AuxiliaryModel, CountInputs, PolicyInputs, Shaped, ShapingInputs,
                                masked_mean, register_algorithm)
from alignrl.algorithms.grpo import GRPO, GRPOParams, group_advantages
from alignrl.rewards import Reward, RewardOutput, register_reward
from alignrl.rollout import register_engine
from alignrl.rollout.hf_engine import HFEngine, HFEngineSettings
from alignrl.sampling import PromptSampler, register_sampler


@dataclass
class TokenRMParams(GRPOParams):
    freeze_steps: int = 2  # the policy does not train for the first steps; the token RM always does
    rm_lr: float = 1e-2


@register_algorithm("test_token_rm")
class TokenRMAlgorithm(GRPO):
    """GRPO whose token weights come from a co-trained scalar-head model (OREAL's shape, simplified)."""

    Params = TokenRMParams

    def auxiliary_models(self) -> list[AuxiliaryModel]:
        return [AuxiliaryModel(name="token_rm", head="scalar", lr=self.params.rm_lr)]

    def trains(self, step: int) -> set[str]:
        return {"token_rm"} if step <= self.params.freeze_steps else {"token_rm", "policy"}

    def shape(self, inputs: ShapingInputs) -> Shaped:
        shaped = super().shape(inputs)
        shaped.token_weights = 2 * torch.sigmoid(inputs.aux_outputs["token_rm"])  # 1.0 for an untrained head
        return shaped

    def auxiliary_loss(self, name: str, inputs: AuxInputs) -> tuple[Tensor, dict[str, Tensor]]:
        label = (inputs.rewards > inputs.rewards.mean()).float()
        score = masked_mean(inputs.outputs, inputs.mask, dim=-1)
        per_seq = torch.nn.functional.binary_cross_entropy_with_logits(score, label, reduction="none")
        return per_seq.sum() / inputs.num_sequences, {"bce": per_seq.mean().detach()}


@dataclass
class CounterParams:
    positive_weight: float = 2.0


@register_algorithm("test_counter")
class CounterAlgorithm(GRPO):
    """Per-token weights and a global counter: positives are normalised by the step's positive-token count."""

    Params = CounterParams

    def __init__(self, params: CounterParams):
        super().__init__(GRPOParams())
        self.counter_params = params

    def shape(self, inputs: ShapingInputs) -> Shaped:
        adv = group_advantages(inputs.rewards, scale=False)
        weights = torch.linspace(0.5, 1.5, inputs.mask.shape[1]).expand_as(inputs.mask).clone()
        return Shaped(advantages=adv, keep=torch.ones_like(adv, dtype=torch.bool), token_weights=weights,
                      per_sample={"positive": (adv > 0).float()})

    def counts(self, inputs: CountInputs) -> dict[str, Tensor]:
        positive = inputs.per_sample["positive"]
        return {"positive_tokens": (inputs.mask.sum(-1) * positive).sum(),
                "negative_tokens": (inputs.mask.sum(-1) * (1 - positive)).sum()}

    def loss(self, inputs: PolicyInputs) -> tuple[Tensor, dict[str, Tensor]]:
        positive = inputs.per_sample["positive"][:, None]
        per_tok = -inputs.logp * inputs.advantages[:, None] * inputs.token_weights * inputs.mask
        pos = (per_tok * positive).sum() / max(inputs.counts["positive_tokens"], 1.0)
        neg = (per_tok * (1 - positive)).sum() / max(inputs.counts["negative_tokens"], 1.0)
        return self.counter_params.positive_weight * pos + neg, {"positive_share": positive.mean()}


@register_algorithm("test_even_prompts")
class EvenPromptsAlgorithm(GRPO):
    """GRPO that trains only on groups whose prompt has an even dataset index (a filter that can empty a rank)."""

    def shape(self, inputs: ShapingInputs) -> Shaped:
        shaped = super().shape(inputs)
        shaped.keep = (inputs.prompt_index % 2 == 0)[:, None].expand_as(shaped.keep).clone()
        return shaped


@dataclass
class HardFirstParams:
    decay: float = 0.5


@register_sampler("test_hard_first")
class HardFirstSampler(PromptSampler):
    """Samples prompts with probability growing with their recent failure rate (a difficulty-balanced sampler)."""

    Params = HardFirstParams
    observes = True

    def __init__(self, params, size, prompts_per_step, seed, shuffle=True):
        super().__init__(params, size, prompts_per_step, seed, shuffle)
        self.pass_rate = torch.full((size,), 0.5, dtype=torch.float64)
        self.generator = torch.Generator().manual_seed(seed)
        self.steps = 0

    def next_indices(self) -> list[int]:
        self.steps += 1
        weights = (1.05 - self.pass_rate).clamp(min=1e-3)
        return torch.multinomial(weights, self.per_step, replacement=False, generator=self.generator).tolist()

    def observe(self, indices, rewards) -> None:
        for index, row in zip(indices, rewards):
            rate = float((row > row.mean()).double().mean())
            self.pass_rate[index] = self.params.decay * self.pass_rate[index] + (1 - self.params.decay) * rate

    def state_dict(self):
        return {"pass_rate": self.pass_rate.clone(), "generator": self.generator.get_state(), "steps": self.steps}

    def load_state_dict(self, state) -> None:
        self.pass_rate = state["pass_rate"].clone()
        self.generator.set_state(state["generator"])
        self.steps = state["steps"]

    @property
    def epoch(self) -> float:
        return self.steps * self.per_step / self.size


@register_reward("test_norm_sevens")
class RunningNormReward(Reward):
    """Share of '7' characters, normalised by running mean/std over all scores seen (state that must resume)."""

    def __init__(self, momentum: float = 0.5):
        self.momentum = momentum
        self.mean, self.var, self.seen = 0.0, 1.0, 0
        self.context = None
        self.closed = False

    def setup(self, context) -> None:
        self.context = context

    def score(self, inputs):
        raw = torch.tensor([c.count("7") / max(len(c), 1) for c in inputs.completions], dtype=torch.float64)
        self.mean = self.momentum * self.mean + (1 - self.momentum) * float(raw.mean())
        self.var = self.momentum * self.var + (1 - self.momentum) * float(raw.var()) if raw.numel() > 1 else self.var
        self.seen += len(raw)
        normalised = (raw - self.mean) / (self.var ** 0.5 + 1e-6)
        return RewardOutput(scores=normalised.tolist(), info={"raw": raw.tolist()})

    def state_dict(self):
        return {"mean": self.mean, "var": self.var, "seen": self.seen}

    def load_state_dict(self, state) -> None:
        self.mean, self.var, self.seen = state["mean"], state["var"], state["seen"]

    def close(self) -> None:
        self.closed = True

    def describe(self):
        return {"momentum": self.momentum}


class PerPromptSeededEngine(HFEngine):
    """Samples each prompt alone with a seed from its tokens and the call count, so the same prompt gets the same
    completions however prompts are split over ranks (for comparing one- and two-process runs)."""

    calls = 0

    def generate(self, prompts, params):
        type(self).calls += 1
        out = []
        for prompt in prompts:
            seed = zlib.crc32(bytes(str((prompt, type(self).calls)), "utf8"))
            out.extend(super().generate([prompt], _with_seed(params, seed)))
        return out


def _with_seed(params, seed):
    import dataclasses

    return dataclasses.replace(params, seed=seed)


@register_engine("test_per_prompt", settings=HFEngineSettings)
def _build_per_prompt(settings, *, model=None, tokenizer=None, **_):
    return PerPromptSeededEngine.from_model(model, tokenizer, settings)


@register_algorithm("test_keep_none")
class KeepNoneAlgorithm(GRPO):
    """GRPO whose filter drops every sample (e.g. every group all-correct under OREAL's filter)."""

    def shape(self, inputs: ShapingInputs) -> Shaped:
        shaped = super().shape(inputs)
        shaped.keep = torch.zeros_like(shaped.keep)
        return shaped
