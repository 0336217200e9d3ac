"""Evaluation: sample on held-out prompts through a rollout engine and score with a reward or the grader."""
