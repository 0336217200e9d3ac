"""Debaters and the batched game: verbatim units, no unit twice, L capped at N, greedy/isolated/LM choices."""

from __future__ import annotations

import pytest
import torch

from alignrl.debate.debaters import (GreedyDebater, LMDebater, MoveState, RandomDebater, debater_prompt,
                                     label_token_ids, unrevealed_from_prompt)
from alignrl.debate.game import DebateError
from alignrl.debate.play import DebateSetup, play_debates, play_moves


def setups_of(problems):
    return [DebateSetup(p.units, (p.gold, p.foil)) for p in problems]


@pytest.mark.parametrize("length", [1, 4, 6, 9])
def test_random_debates_reveal_distinct_verbatim_units_capped_at_n(problems, judge, length):
    setups = setups_of(problems)
    first = [i % 2 for i in range(len(setups))]
    transcripts = play_debates(setups, (RandomDebater(0), RandomDebater(1)), judge, length, first)
    for s, t in zip(setups, transcripts):
        assert len(t.revealed) == min(length, len(s.units))  # L capped at N
        assert len(set(t.revealed)) == len(t.revealed)  # never a unit twice
        assert all(unit == s.units[i] for _, i, unit in t.moves)  # verbatim units of the context
        assert [side for side, _, _ in t.moves] == [(t.first + m) % 2 for m in range(len(t.moves))]
        assert t.scores is not None and t.outcome in (-1.0, 0.0, 1.0)
        assert t.outcome == float(torch.sign(torch.tensor(t.scores[0] - t.scores[1])))


def test_a_silent_side_passes_its_turns(problems, judge):
    setups = setups_of(problems[:6])
    transcripts = play_moves(setups, (RandomDebater(0), None), 4, [0, 1, 0, 1, 0, 1])
    assert all(len(t.moves) == 2 and t.by_side(1) == [] for t in transcripts)


def test_greedy_picks_the_best_margin_and_isolated_ignores_the_opponent(fake_judge):
    units = ["g0", "g1", "bad", "fix"]
    # "g1" helps answer "X" a lot, "g0" a little; "bad" helps "Y"; "fix" helps "X" only next to "bad"
    weights = {("g0", "X"): 1.0, ("g1", "X"): 3.0, ("bad", "Y"): 5.0}

    def weight(unit, answer):
        return weights.get((unit, answer), 0.0)

    judge = fake_judge(weight)
    state = MoveState(units, ("X", "Y"), side=0, revealed=[1], own=[], moves_left=2)
    assert GreedyDebater(judge).choose([state]) == [0]  # g1 is taken: g0 is the best left
    confuser = MoveState(units, ("X", "Y"), side=1, revealed=[], own=[], moves_left=2)
    assert GreedyDebater(judge).choose([confuser]) == [2]

    def interaction(unit, answer):  # "fix" is worth 10 for X only when "bad" is on the table
        return weight(unit, answer)

    class Contextual(fake_judge):
        def score(self, units_, revealed, answers):
            base = super().score(units_, revealed, answers)
            bonus = [10.0 if a == "X" and 2 in r and 3 in r else 0.0 for r, a in zip(revealed, answers)]
            return base + torch.tensor(bonus)

    judge = Contextual(interaction)
    after_bad = MoveState(units, ("X", "Y"), side=0, revealed=[2], own=[], moves_left=1)
    assert GreedyDebater(judge).choose([after_bad]) == [3]  # reacts to the opponent's unit
    assert GreedyDebater(judge, isolated=True).choose([after_bad]) == [1]  # plans as if alone


def test_debater_prompt_round_trip_and_labels(problems, tokenizer):
    p = problems[0]
    text = debater_prompt(p.units, (p.gold, p.foil), 1, [4, 0])
    assert text.endswith(f"A{p.gold}|B{p.foil}|B|0___4_>") and p.units[3] in text
    assert unrevealed_from_prompt(text) == [1, 2, 3, 5]
    assert len(set(label_token_ids(tokenizer, "0123456789"))) == 10
    with pytest.raises(DebateError, match="not a debater prompt"):
        unrevealed_from_prompt("482+396=")
    with pytest.raises(DebateError, match="index labels"):
        debater_prompt(["u"] * 11, ("1", "2"), 0, [])
    with pytest.raises(DebateError, match="one token"):
        label_token_ids(tokenizer, ["ab"])  # type: ignore[arg-type]


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_lm_debater_decodes_only_unrevealed_indices(problems, tokenizer, debater_dir, temperature):
    from alignrl.rollout import build_engine

    engine = build_engine("hf", None, model_path=str(debater_dir), tokenizer=tokenizer)
    debater = LMDebater(engine, tokenizer, temperature=temperature, seed=3)
    states = [MoveState(p.units, (p.gold, p.foil), i % 2, list(range(i % 6)), [], 4) for i, p in enumerate(problems)]
    for _ in range(3):
        choices = debater.choose(states)
        assert all(c in s.unrevealed() for c, s in zip(choices, states))
        assert all(lp <= 0 for lp in debater.last_logprobs)
    only = MoveState(problems[0].units, ("1", "2"), 0, [0, 1, 2, 3, 5], [], 1)
    assert debater.choose([only]) == [4] and debater.last_logprobs[0] == pytest.approx(0.0, abs=1e-6)
    # with every unit but one revealed, a full LM debate still never re-reveals
    setups = setups_of(problems[:8])
    for t in play_moves(setups, (debater, debater), 6, [0, 1] * 4):
        assert sorted(t.revealed) == list(range(6))
