"""Rollout engines behind one narrow interface. Importing this package registers the built-in engines."""

from alignrl.rollout.base import (Completion, RolloutEngine, SamplingParams, WeightUpdate, build_engine,
                                  engine_settings_class, register_engine, registered_engines)
from alignrl.rollout.hf_engine import HFEngineSettings  # registers "hf"
from alignrl.rollout.vllm_engine import VLLMEngineSettings  # registers "vllm" (vLLM itself is imported on use)
import alignrl.debate.engine  # noqa: E402,F401  registers "debate_hf" (debaters' self-play; imported first is fine)

__all__ = ["Completion", "HFEngineSettings", "RolloutEngine", "SamplingParams", "VLLMEngineSettings", "WeightUpdate",
           "build_engine", "engine_settings_class", "register_engine", "registered_engines"]
