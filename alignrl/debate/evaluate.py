"""Measurements on the synthetic domain: judge accuracy under each evidence-selection scheme, and the task reward,
justifiability and debate cost of a policy trained with the debate reward.

Judge accuracy is the share of held-out problems where, after the evidence is revealed, J(e, gold) > J(e, foil)
(ties count half). Side A argues for the gold answer, side B for the foil, from a random first mover, L units in
all. The **confuser** is the fixed strategy (greedy by judge score) arguing for the foil: it sees every revealed
unit and picks the one that most helps the foil.
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignrl.debate.debaters import Debater, GreedyDebater, MoveState, RandomDebater
from alignrl.debate.domain import Problem
from alignrl.debate.game import Transcript
from alignrl.debate.play import DebateSetup, judge_transcripts, play_debates


class Teammate(Debater):
    """Plays side B's turns for side A: one-sided selection of all L units by ``inner`` (every revealed unit is its
    own)."""

    def __init__(self, inner: Debater):
        self.inner, self.name = inner, f"{inner.name}-alone"

    def choose(self, states: list[MoveState]) -> list[int]:
        return self.inner.choose([MoveState(s.units, s.answers, 0, s.revealed, list(s.revealed), s.moves_left)
                                  for s in states])


def accuracy(transcripts: Sequence[Any], problems: Sequence[Problem]) -> dict[str, float]:
    """Share of debates the gold side (A) wins, ties half; overall and by foil kind."""
    wins = [(t.outcome + 1) / 2 for t in transcripts]  # zero_sum outcome for A: +1 win, 0 tie, -1 loss
    out = {"all": sum(wins) / max(len(wins), 1)}
    for kind in ("dropped", "spurious"):
        members = [w for w, p in zip(wins, problems) if p.kind == kind]
        out[kind] = sum(members) / max(len(members), 1)
    return out


def judge_table(judge: Any, problems: Sequence[Problem], length: int, seed: int,
                trained: Debater | None = None) -> dict[str, dict[str, dict[str, float]]]:
    """Judge accuracy per selection scheme (rows) without and with the confuser (columns)."""
    setups = [DebateSetup(p.units, (p.gold, p.foil)) for p in problems]
    rng = random.Random(f"alignrl-debate-table/{seed}")
    first = [rng.randrange(2) for _ in problems]
    greedy, isolated = GreedyDebater(judge), GreedyDebater(judge, isolated=True)
    confuser = GreedyDebater(judge)

    def run(a: Debater, b: Debater | None) -> dict[str, float]:
        return accuracy(play_debates(setups, (a, b), judge, length, first), problems)

    full = [Transcript(s.answers, f, [(0, i, u) for i, u in enumerate(s.units)])  # type: ignore[arg-type]
            for s, f in zip(setups, first)]
    table = {"full evidence": {"alone": accuracy(judge_transcripts(setups, full, judge), problems)},
             "random": {"alone": run(RandomDebater(f"{seed}/r1"), RandomDebater(f"{seed}/r2")),
                        "confuser": run(RandomDebater(f"{seed}/r3"), confuser)},
             "isolated": {"alone": run(isolated, Teammate(isolated)), "confuser": run(isolated, confuser)},
             "debate (fixed, greedy)": {"alone": run(greedy, greedy), "confuser": run(greedy, confuser)}}
    if trained is not None:
        table["debate (trained, self-play)"] = {"alone": run(trained, trained), "confuser": run(trained, confuser)}
    return table


def greedy_answers(model_path: str | Path, prompts: Sequence[str], max_new_tokens: int = 16,
                   batch: int = 256) -> list[str]:
    """Greedy completions of a causal LM folder (the hf engine), in prompt order."""
    from transformers import AutoTokenizer

    from alignrl.rollout import SamplingParams, build_engine

    tokenizer = AutoTokenizer.from_pretrained(str(model_path))
    engine = build_engine("hf", {"generation_batch_size": batch}, model_path=str(model_path), tokenizer=tokenizer)
    try:
        groups = engine.generate([tokenizer(p)["input_ids"] for p in prompts],
                                 SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens))
    finally:
        engine.close()
    return [g[0].text for g in groups]


def policy_figures(policy: str | Path, baseline: str | Path, rows: Sequence[dict], judge: Any, length: int,
                   seed: int) -> dict[str, float]:
    """Held-out greedy task reward (math verifier) and justifiability: the mean debate reward (``win01``; equal
    answers tie at 0.5, no answer 0) of the policy's answer against the baseline's, greedy debaters, L units."""
    from alignrl.debate.domain import extract_answer, units_for_prompt
    from alignrl.debate.reward import TIE
    from alignrl.rewards import RewardInputs, build_reward

    prompts = [r["prompt"] for r in rows]
    completions = greedy_answers(policy, prompts)
    math = build_reward("math").score(RewardInputs.from_rows(prompts, completions, list(rows), ["stop"] * len(rows),
                                                             [[0]] * len(rows)))
    ours = [extract_answer(c) for c in completions]
    theirs = [extract_answer(c) for c in greedy_answers(baseline, prompts)]
    rng = random.Random(f"alignrl-debate-justify/{seed}")
    wins = [0.0 if y is None else TIE["win01"] for y in ours]
    rows_debated = [i for i, (y, b) in enumerate(zip(ours, theirs)) if y is not None and y != b]
    setups = [DebateSetup(units_for_prompt(prompts[i]), (str(ours[i]), str(theirs[i]))) for i in rows_debated]
    greedy = GreedyDebater(judge)
    transcripts = play_debates(setups, (greedy, greedy), judge, length, [rng.randrange(2) for _ in setups], "win01")
    for i, t in zip(rows_debated, transcripts):
        wins[i] = float(t.outcome)
    n = max(len(rows), 1)
    return {"task_reward": sum(math.scores) / n, "justifiability": sum(wins) / n,
            "same_as_baseline": sum(y is not None and y == b for y, b in zip(ours, theirs)) / n,
            "debated": len(rows_debated) / n}


def step_costs(run_dir: str | Path) -> dict[str, float]:
    """Mean seconds per RL step (generate + score + update + sync) and in scoring, from ``metrics.jsonl``; the
    first step (warm-up) is left out when there are more."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines() if line.strip()]
    rows = rows[1:] if len(rows) > 1 else rows
    parts = ("time/generate", "time/score", "time/update", "time/sync")
    step = [sum(r.get(k, 0.0) for k in parts) for r in rows]
    return {"step_seconds": sum(step) / len(step), "score_seconds": sum(r["time/score"] for r in rows) / len(rows),
            "steps": len(rows)}
