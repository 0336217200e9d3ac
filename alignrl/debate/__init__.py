"""Debate-based reward models (design/algorithms.md §4; Sukovic & Radanovic, "Reward Design for Justifiable
Sequential Decision-Making", ICLR 2024).

- :mod:`~alignrl.debate.game`: the game as pure functions (index masking, outcomes, λ-mixing, the judge's BT loss,
  the judge's view of the evidence);
- :mod:`~alignrl.debate.domain`: a synthetic domain with known truth (worked additions as evidence units);
- :mod:`~alignrl.debate.judge`, :mod:`~alignrl.debate.judge_train`: the judge (a sequence classifier) and its
  Bradley-Terry training on fresh random evidence subsets;
- :mod:`~alignrl.debate.debaters`, :mod:`~alignrl.debate.play`: fixed, random, isolated and LM debaters, and the
  batched game;
- :mod:`~alignrl.debate.reward` (``debate``), :mod:`~alignrl.debate.move_reward` (``debate_move``): the rewards;
- :mod:`~alignrl.debate.engine`, :mod:`~alignrl.debate.selfplay`: self-play through the ordinary RL loop;
- :mod:`~alignrl.debate.experiments`: the figures of ``docs/results.md``.

Importing this package imports nothing heavy (the reward registry imports :mod:`~alignrl.debate.reward`).
"""
