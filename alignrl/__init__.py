"""alignrl: reinforcement learning for aligning LLMs and teaching them to reason.

The RL loop is :mod:`alignrl.loop`; algorithms live in :mod:`alignrl.algorithms` (one file of tensor functions
each), rollout engines in :mod:`alignrl.rollout`, rewards in :mod:`alignrl.rewards`, the math grader in
:mod:`alignrl.grading`. ``alignrl.loop.train(alignrl.config.load_config("recipe.yaml"))`` is what
``alignrl train recipe.yaml`` runs.
"""

__version__ = "0.1.0"
