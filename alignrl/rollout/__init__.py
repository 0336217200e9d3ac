"""Rollout engines behind one narrow interface. Importing this package registers the built-in engines."""

from alignrl.rollout.base import Completion, RolloutEngine, SamplingParams, build_engine, register_engine
from alignrl.rollout import hf_engine as _hf_engine  # noqa: F401  (registers "hf")

__all__ = ["Completion", "RolloutEngine", "SamplingParams", "build_engine", "register_engine"]
