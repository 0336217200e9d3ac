"""Recipes as typed configs: ``load_config(path, overrides)`` -> ``RunConfig``."""

from alignrl.config.loader import apply_override, load_config, read_yaml, save_config
from alignrl.config.schema import (AlgorithmConfig, DataConfig, EvalConfig, LoggingConfig, LoraConfig, ModelConfig,
                                   RewardConfig, RewardFunctionConfig, RolloutConfig, RunConfig, TrainerConfig)
from alignrl.config.typed import ConfigError

__all__ = ["AlgorithmConfig", "ConfigError", "DataConfig", "EvalConfig", "LoggingConfig", "LoraConfig", "ModelConfig",
           "RewardConfig", "RewardFunctionConfig", "RolloutConfig", "RunConfig", "TrainerConfig", "apply_override",
           "load_config", "read_yaml", "save_config"]
