"""Reward functions. Importing this package registers the built-in ones."""

from alignrl.rewards.registry import RewardError, call_reward, register_reward, registered_rewards, resolve_reward
from alignrl.rewards import math as _math  # noqa: F401,E402  (registers "math")

__all__ = ["RewardError", "call_reward", "register_reward", "registered_rewards", "resolve_reward"]
