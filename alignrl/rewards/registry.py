"""Rewards by name (``@register_reward``) or as ``package.module:attr``, with their output checked.

A reward is either a :class:`~alignrl.rewards.base.Reward` subclass (the recipe's ``kwargs`` are its
constructor's keyword arguments) or a function with the signature of TRL's reward callables::

    fn(prompts: list[str], completions: list[str], **columns) -> list[float]

``columns`` holds every dataset column of the sample's prompt row (e.g. ``answer``) plus ``finish_reasons``
(``"stop"`` or ``"length"`` per completion) and ``completion_ids``. Extra keyword arguments from the recipe
(``reward.functions[i].kwargs``) are passed too.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Sequence
from typing import Any

RewardFn = Callable[..., Sequence[float]]
#: Keyword names the trainer passes itself; a dataset column or a recipe kwarg may not use them.
RESERVED_COLUMNS = frozenset({"prompts", "completions", "finish_reasons", "completion_ids"})

_REWARDS: dict[str, Any] = {}  # name -> a reward function or a Reward subclass


class RewardError(RuntimeError):
    """A reward function failed or returned something unusable; the message names the function."""


def register_reward(name: str) -> Callable[[Any], Any]:
    """Decorator for a function or a ``Reward`` subclass: usable as ``reward.functions: [{name: <name>}]``."""

    def decorate(fn: Any) -> Any:
        if not callable(fn):
            raise TypeError(f"register_reward('{name}'): expected a function or a Reward subclass, got {fn!r}")
        if name in _REWARDS and _REWARDS[name] is not fn:
            raise ValueError(f"reward '{name}' is already registered by {_REWARDS[name].__module__}")
        _REWARDS[name] = fn
        return fn

    return decorate


def resolve_reward(name: str) -> Any:
    """The function or ``Reward`` subclass registered as ``name``, or ``package.module:attr`` imported on demand."""
    if ":" in name:
        module_name, _, attr = name.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            raise RewardError(f"reward '{name}': cannot import module '{module_name}': {err}") from err
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise RewardError(f"reward '{name}': module '{module_name}' has no callable '{attr}'")
        return fn
    import alignrl.rewards  # noqa: F401  (registers the built-in rewards)

    if name not in _REWARDS:
        known = ", ".join(sorted(_REWARDS)) or "(none)"
        raise RewardError(f"unknown reward '{name}'; registered: {known}; or give 'package.module:function' "
                          f"(or 'package.module:RewardClass')")
    return _REWARDS[name]


def registered_rewards() -> list[str]:
    import alignrl.rewards  # noqa: F401

    return sorted(_REWARDS)


def call_reward(name: str, fn: RewardFn, prompts: list[str], completions: list[str], **kwargs: Any) -> list[float]:
    """Call ``fn`` and check it returned one finite number per completion; errors name the function."""
    try:
        scores = fn(prompts=prompts, completions=completions, **kwargs)
    except Exception as err:  # a user's reward code may raise anything: re-raise with its name attached
        raise RewardError(f"reward '{name}' raised {type(err).__name__}: {err}") from err
    try:
        scores = [float(s) for s in scores]
    except (TypeError, ValueError) as err:
        raise RewardError(f"reward '{name}' must return a list of numbers, got {type(scores).__name__}") from err
    if len(scores) != len(completions):
        raise RewardError(f"reward '{name}' returned {len(scores)} scores for {len(completions)} completions")
    bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
    if bad:
        raise RewardError(f"reward '{name}' returned non-finite scores ({scores[bad[0]]}) at index {bad[0]} "
                          f"({len(bad)} of {len(scores)}); completion: {completions[bad[0]][:200]!r}")
    return scores
