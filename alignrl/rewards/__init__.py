"""Rewards: the :class:`Reward` component, the registry and the built-in ones (importing this registers them).

``RewardSet`` / ``RewardTerm`` / ``ScoredBatch`` (:mod:`alignrl.rewards.scoring`) load lazily: they need torch,
which the grader and the ``math`` reward do not.
"""

from typing import Any

from alignrl.rewards.registry import RewardError, call_reward, register_reward, registered_rewards, resolve_reward
from alignrl.rewards.base import (FunctionReward, Reward, RewardContext, RewardInputs,  # noqa: E402
                                  RewardOutput, build_reward, run_reward)
from alignrl.rewards.math import MathReward, math_reward  # noqa: E402  (registers "math")
from alignrl.rewards.bt_rm import BradleyTerryReward  # noqa: E402  (registers "bt_rm"; loads torch only in setup)
from alignrl.debate.reward import DebateMoveReward, DebateReward  # noqa: E402,F401  ("debate", "debate_move"; torch in setup)

_LAZY = {"RewardSet", "RewardTerm", "ScoredBatch"}

__all__ = ["BradleyTerryReward", "FunctionReward", "MathReward", "Reward", "RewardContext", "RewardError", "RewardInputs",
           "RewardOutput", "RewardSet", "RewardTerm", "ScoredBatch", "build_reward", "call_reward", "math_reward",
           "register_reward", "registered_rewards", "resolve_reward", "run_reward"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        from alignrl.rewards import scoring

        return getattr(scoring, name)
    raise AttributeError(f"module 'alignrl.rewards' has no attribute '{name}'")
