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
