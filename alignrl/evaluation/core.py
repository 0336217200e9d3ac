"""Held-out evaluation shared by training (``eval`` section), the quickstart and ``alignrl eval``."""

from __future__ import annotations

from typing import Any

from alignrl.data import PromptSet
from alignrl.rewards.base import RewardInputs
from alignrl.rewards.scoring import RewardSet
from alignrl.rollout.base import RolloutEngine, SamplingParams


def evaluate_prompts(engine: RolloutEngine, prompts: PromptSet, indices: list[int], params: SamplingParams,
                     rewards: RewardSet, term: int | str = 0, batch_size: int = 64) -> list[dict[str, Any]]:
    """Sample ``params.n`` completions for each prompt in ``indices``; a sample is correct when the chosen reward
    term (an index into ``rewards.terms`` or a name) scores it above zero. Only that term is run (even at weight
    0). Returns one record per sample."""
    name = rewards.terms[term].name if isinstance(term, int) else rewards.term(term).name
    records = []
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        groups = engine.generate([prompts.token_ids[i] for i in chunk], params)
        flat = [(i, c) for i, group in zip(chunk, groups) for c in group]
        inputs = RewardInputs.from_rows([prompts.texts[i] for i, _ in flat], [c.text for _, c in flat],
                                        [prompts.rows[i] for i, _ in flat], [c.finish_reason for _, c in flat],
                                        [list(c.token_ids) for _, c in flat])
        scores = rewards.score(inputs, only=[name]).parts[name]
        for (i, completion), score in zip(flat, scores.tolist()):
            records.append({"index": i, "completion": completion.text, "reward": score, "correct": score > 0,
                            "length": len(completion.token_ids), "finish_reason": completion.finish_reason})
    return records


def summarize(records: list[dict[str, Any]]) -> dict[str, float]:
    """pass@1 (mean correctness over all samples), mean reward, mean length, truncated share."""
    n = max(len(records), 1)
    return {"pass_at_1": sum(r["correct"] for r in records) / n,
            "mean_reward": sum(r["reward"] for r in records) / n,
            "mean_length": sum(r["length"] for r in records) / n,
            "truncated": sum(r["finish_reason"] == "length" for r in records) / n}
