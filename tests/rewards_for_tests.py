"""Grader-free reward functions for loop tests, importable as ``rewards_for_tests:<name>`` (tests/ is on the path)."""

from __future__ import annotations

from alignrl.quickstart.task import boxed_answer
from alignrl.rewards import register_reward


@register_reward("test_exact_boxed")
def exact_boxed(prompts, completions, answer, **_):
    """1.0 when the last ``\\boxed{}`` holds the gold answer."""
    return [1.0 if boxed_answer(c) == a else 0.0 for c, a in zip(completions, answer)]


@register_reward("test_length")
def short_is_good(prompts, completions, **_):
    """A dense reward that prefers short completions."""
    return [-len(c) / 10.0 for c in completions]


@register_reward("test_sevens")
def count_sevens(prompts, completions, **_):
    """A dense reward a tiny random model can climb quickly: the share of '7' characters."""
    return [c.count("7") / max(len(c), 1) for c in completions]


def record_prompts(prompts, completions, **_):
    """``count_sevens`` that also appends each scored prompt to $ALIGNRL_TEST_RECORD.rank<RANK>."""
    import os

    with open(f"{os.environ['ALIGNRL_TEST_RECORD']}.rank{os.environ.get('RANK', '0')}", "a") as handle:
        handle.writelines(p + "\n" for p in prompts)
    return count_sevens(prompts, completions)


# --- Reward components (alignrl.rewards.Reward): lifecycle, state and output checks ---

from alignrl.rewards import Reward, RewardContext, RewardInputs, RewardOutput  # noqa: E402


@register_reward("test_running_norm")
class RunningNormReward(Reward):
    """``count_sevens`` normalised by the running mean/std of every raw score seen so far (Welford), clipped.

    Its scores depend on the batches before: checkpoint state (``count``, ``mean``, ``m2``) must round-trip.
    """

    def __init__(self, eps: float = 1e-6, clip: float = 5.0):
        if clip <= 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.eps, self.clip = float(eps), float(clip)
        self.count, self.mean, self.m2 = 0, 0.0, 0.0
        self.context: RewardContext | None = None
        self.closed = False

    def setup(self, context: RewardContext) -> None:
        self.context = context

    def score(self, inputs: RewardInputs) -> RewardOutput:
        raw = count_sevens(inputs.prompts, inputs.completions)
        for x in raw:
            self.count += 1
            delta = x - self.mean
            self.mean += delta / self.count
            self.m2 += delta * (x - self.mean)
        std = (self.m2 / self.count) ** 0.5 if self.count else 0.0
        scores = [max(-self.clip, min(self.clip, (x - self.mean) / (std + self.eps))) for x in raw]
        return RewardOutput(scores, {"raw": raw})

    def state_dict(self) -> dict:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), float(state["mean"]), float(state["m2"])

    def close(self) -> None:
        self.closed = True

    def describe(self) -> dict:
        return {**super().describe(), "eps": self.eps, "clip": self.clip}


@register_reward("test_counting")
class CountingReward(Reward):
    """Scores ``value`` for every sample and counts its ``score`` calls (also ``rewards_for_tests:CountingReward``)."""

    def __init__(self, value: float = 1.0):
        self.value = float(value)
        self.calls = 0

    def score(self, inputs: RewardInputs) -> RewardOutput:
        self.calls += 1
        return RewardOutput([self.value] * len(inputs), {"value": [self.value] * len(inputs),
                                                          "index": [float(i) for i in range(len(inputs))]})


class BrokenReward(Reward):
    """Returns a bad output of the given ``kind`` (for ``rewards_for_tests:BrokenReward``)."""

    def __init__(self, kind: str):
        self.kind = kind

    def score(self, inputs: RewardInputs):
        n = len(inputs)
        if self.kind == "short":
            return RewardOutput([0.0] * (n - 1))
        if self.kind == "nan":
            return RewardOutput([0.0] * (n - 1) + [float("inf")])
        if self.kind == "info_length":
            return RewardOutput([0.0] * n, {"extra": [1.0]})
        if self.kind == "list":
            return [0.0] * n
        if self.kind == "raise":
            raise ZeroDivisionError("boom")
        raise AssertionError(self.kind)
