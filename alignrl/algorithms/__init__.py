"""Algorithms: pure tensor functions plus registry entries. Importing this package registers the built-ins."""

from alignrl.algorithms.base import (
    Algorithm,
    AuxInputs,
    AuxiliaryModel,
    CountInputs,
    PolicyInputs,
    Shaped,
    ShapingInputs,
    algorithm_class,
    masked_mean,
    masked_sum,
    register_algorithm,
    registered_algorithms,
)
from alignrl.algorithms import demo_kl, grpo, kl, oreal, p3o, policy_gradient, rloo  # noqa: F401  (registration)

__all__ = [
    "Algorithm",
    "AuxInputs",
    "AuxiliaryModel",
    "CountInputs",
    "PolicyInputs",
    "Shaped",
    "ShapingInputs",
    "algorithm_class",
    "masked_mean",
    "masked_sum",
    "register_algorithm",
    "registered_algorithms",
]
