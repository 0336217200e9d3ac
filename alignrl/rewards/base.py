"""Rewards as components: :class:`Reward` has a lifecycle (setup, batched score, state, close, describe).

The trainer gives every reward one :class:`RewardContext` before the first score, then calls
:meth:`Reward.score` on :class:`RewardInputs` batches; the reward's :meth:`Reward.state_dict` is saved in every
checkpoint and restored on resume. A plain TRL-style function ``fn(prompts, completions, **columns)`` is
wrapped in :class:`FunctionReward`. Every output goes through :func:`check_output`, whose errors name the reward.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from alignrl.rewards.registry import RESERVED_COLUMNS, RewardError, RewardFn, call_reward, resolve_reward

if TYPE_CHECKING:  # torch stays unimported: the grader and the math reward must load without it
    import torch


@dataclass
class RewardContext:
    """What a reward may use, given once by the trainer (or evaluation) before the first score."""

    device: torch.device
    accelerator: Any | None  # accelerate.Accelerator, or None in evaluation
    tokenizer: Any | None
    # build_engine-like: engine_factory(name, settings=None, *, model_path=..., dtype=..., device=...) -> engine
    engine_factory: Callable[..., Any] | None
    run_dir: Path | None
    seed: int = 0


@dataclass
class RewardInputs:
    """One batch of samples; ``columns`` holds the dataset columns of each sample's prompt row."""

    prompts: list[str]
    completions: list[str]
    columns: dict[str, list[Any]]
    finish_reasons: list[str]  # "stop" | "length"
    completion_ids: list[list[int]]
    step: int = 0  # training step (0 in evaluation)

    def __post_init__(self) -> None:
        n = len(self.completions)
        sizes = {"prompts": len(self.prompts), "finish_reasons": len(self.finish_reasons),
                 "completion_ids": len(self.completion_ids),
                 **{f"columns[{k!r}]": len(v) for k, v in self.columns.items()}}
        bad = {k: v for k, v in sizes.items() if v != n}
        if bad:
            raise ValueError(f"RewardInputs: {n} completions but " + ", ".join(f"{v} {k}" for k, v in bad.items()))
        reserved = RESERVED_COLUMNS & set(self.columns)
        if reserved:
            raise ValueError(f"RewardInputs: columns may not be named {sorted(reserved)} (reserved)")

    def __len__(self) -> int:
        return len(self.completions)

    @classmethod
    def from_rows(cls, prompts: list[str], completions: list[str], rows: list[dict[str, Any]],
                  finish_reasons: list[str], completion_ids: list[list[int]], step: int = 0) -> RewardInputs:
        """Build from one prompt-row dict per sample (reserved keys in the rows are dropped)."""
        return cls(prompts, completions, columns_of(rows), finish_reasons, completion_ids, step)

    def keyword_columns(self) -> dict[str, list[Any]]:
        """TRL's reward keyword arguments: every column plus ``finish_reasons`` and ``completion_ids``."""
        return {**self.columns, "finish_reasons": self.finish_reasons, "completion_ids": self.completion_ids}


@dataclass
class RewardOutput:
    """One finite score per sample, and optional per-sample numbers (logged as their means)."""

    scores: list[float]
    info: dict[str, list[float]] = field(default_factory=dict)


class Reward(ABC):
    """A reward with a lifecycle; plain functions are wrapped in :class:`FunctionReward`."""

    def setup(self, context: RewardContext) -> None:
        """Called once before the first :meth:`score` (load models, build engines); the default does nothing."""

    @abstractmethod
    def score(self, inputs: RewardInputs) -> RewardOutput:
        """Score a batch: one finite number per sample."""

    def state_dict(self) -> dict:
        """State saved in every checkpoint (json/torch-serialisable); the default has none."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned; the default accepts only an empty state."""
        if state:
            raise RewardError(f"{type(self).__name__} keeps no state but was given keys {sorted(state)}")

    def close(self) -> None:
        """Release what :meth:`setup` acquired; the default does nothing."""

    def describe(self) -> dict:
        """JSON-able settings, written by the trainer to the run folder."""
        return {"class": f"{type(self).__module__}.{type(self).__qualname__}"}


class FunctionReward(Reward):
    """A TRL-style function ``fn(prompts, completions, **columns) -> list[float]`` with the recipe's kwargs."""

    def __init__(self, name: str, fn: RewardFn, kwargs: dict[str, Any] | None = None):
        self.name, self.fn, self.kwargs = name, fn, dict(kwargs or {})
        reserved = RESERVED_COLUMNS & set(self.kwargs)
        if reserved:
            raise RewardError(f"reward '{name}': kwargs may not set {sorted(reserved)} (passed by the trainer)")
        accepted = _accepted_keywords(fn)
        unknown = sorted(set(self.kwargs) - accepted) if accepted is not None else []
        if unknown:
            raise RewardError(f"reward '{name}': unknown keyword argument '{unknown[0]}' for function "
                              f"{_qualname(fn)}; it accepts: {', '.join(sorted(accepted)) or '(none)'}")

    def score(self, inputs: RewardInputs) -> RewardOutput:
        columns = inputs.keyword_columns()
        clash = sorted(set(columns) & set(self.kwargs))
        if clash:
            raise RewardError(f"reward '{self.name}': kwarg '{clash[0]}' has the name of a dataset column; "
                              f"rename one of them")
        return RewardOutput(call_reward(self.name, self.fn, inputs.prompts, inputs.completions,
                                        **columns, **self.kwargs))

    def describe(self) -> dict:
        return {"function": _qualname(self.fn), "kwargs": self.kwargs}


def build_reward(name: str, kwargs: dict[str, Any] | None = None) -> Reward:
    """Resolve ``name`` and instantiate it: a ``Reward`` subclass gets ``kwargs`` as constructor keyword
    arguments, a function is wrapped in :class:`FunctionReward`. Bad kwargs raise a :class:`RewardError`."""
    kwargs = dict(kwargs or {})
    target = resolve_reward(name)
    if not (isinstance(target, type) and issubclass(target, Reward)):
        if isinstance(target, type):
            raise RewardError(f"reward '{name}': class {target.__qualname__} is not a subclass of "
                              f"alignrl.rewards.Reward")
        return FunctionReward(name, target, kwargs)
    accepted = set() if target.__init__ is object.__init__ else _accepted_keywords(target.__init__)
    unknown = sorted(set(kwargs) - (accepted - {"self"})) if accepted is not None else []
    if unknown:
        raise RewardError(f"reward '{name}': unknown keyword argument '{unknown[0]}' for {target.__qualname__}; "
                          f"it accepts: {', '.join(sorted(accepted - {'self'})) or '(none)'}")
    try:
        return target(**kwargs)
    except RewardError:
        raise
    except Exception as err:  # a bad value (mode="ternary"), a missing argument: name the reward
        raise RewardError(f"reward '{name}': cannot construct {target.__qualname__} with kwargs {kwargs}: "
                          f"{type(err).__name__}: {err}") from err


def run_reward(name: str, reward: Reward, inputs: RewardInputs) -> RewardOutput:
    """``reward.score(inputs)`` with its output checked; any error is a :class:`RewardError` naming ``name``."""
    try:
        output = reward.score(inputs)
    except RewardError:
        raise
    except Exception as err:  # a user's reward code may raise anything: re-raise with its name attached
        raise RewardError(f"reward '{name}' raised {type(err).__name__}: {err}") from err
    return check_output(name, output, inputs.completions)


def check_output(name: str, output: Any, completions: list[Any]) -> RewardOutput:
    """Check one finite score per completion and info lists of the same length; returns floats."""
    if not isinstance(output, RewardOutput):
        raise RewardError(f"reward '{name}' must return a RewardOutput from score(), got {type(output).__name__}")
    n = len(completions)
    try:
        scores = [float(s) for s in output.scores]
    except (TypeError, ValueError) as err:
        raise RewardError(f"reward '{name}' must return a list of numbers, got {type(output.scores).__name__}") \
            from err
    if len(scores) != n:
        raise RewardError(f"reward '{name}' returned {len(scores)} scores for {n} completions")
    bad = [i for i, s in enumerate(scores) if not math.isfinite(s)]
    if bad:
        raise RewardError(f"reward '{name}' returned non-finite scores ({scores[bad[0]]}) at index {bad[0]} "
                          f"({len(bad)} of {n}); completion: {str(completions[bad[0]])[:200]!r}")
    info = {}
    for key, values in output.info.items():
        try:
            values = [float(v) for v in values]
        except (TypeError, ValueError) as err:
            raise RewardError(f"reward '{name}': info['{key}'] must be a list of numbers") from err
        if len(values) != n:
            raise RewardError(f"reward '{name}': info['{key}'] has {len(values)} values for {n} completions")
        if not all(math.isfinite(v) for v in values):
            raise RewardError(f"reward '{name}': info['{key}'] holds non-finite values")
        info[str(key)] = values
    return RewardOutput(scores, info)


def columns_of(rows: list[dict[str, Any]]) -> dict[str, list[Any]]:
    """Row dicts -> one list per column (TRL's convention for reward keyword arguments)."""
    keys = {k for row in rows for k in row}
    return {k: [row.get(k) for row in rows] for k in sorted(keys - RESERVED_COLUMNS)}


def _accepted_keywords(fn: Callable[..., Any]) -> set[str] | None:
    """Keyword names ``fn`` accepts, or None when it takes ``**kwargs`` (or cannot be inspected)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD,
                                                 inspect.Parameter.KEYWORD_ONLY)}


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', type(obj).__name__)}"
