"""The pure game functions of design/algorithms.md §4: outcomes, masking, λ-mixing, the judge's BT loss, evidence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from alignrl.debate.game import (DebateError, Transcript, debate_outcome, judge_bt_loss, justifiable_reward,
                                 masked_index_logits, moves_cap, mover, render_evidence, reveal)


@pytest.mark.parametrize("mode", ["zero_sum", "diff", "smooth"])
def test_outcome_is_zero_sum(mode):
    """§4 test 1: with fixed evidence, outcome(a1, a2) = -outcome(a2, a1) (ties included)."""
    j1 = torch.tensor([1.5, -0.3, 2.0, 0.0, 4.0])
    j2 = torch.tensor([0.5, 0.7, 2.0, -1.0, 4.0])
    assert torch.equal(debate_outcome(j1, j2, mode), -debate_outcome(j2, j1, mode))


def test_outcome_values():
    j1, j2 = torch.tensor([2.0, 1.0, 3.0]), torch.tensor([1.0, 2.0, 3.0])
    assert debate_outcome(j1, j2, "zero_sum").tolist() == [1.0, -1.0, 0.0]
    assert debate_outcome(j1, j2, "win01").tolist() == [1.0, 0.0, 0.5]
    assert debate_outcome(j1, j2, "win01").add(debate_outcome(j2, j1, "win01")).tolist() == [1.0, 1.0, 1.0]
    assert debate_outcome(j1, j2, "diff").tolist() == [1.0, -1.0, 0.0]
    assert torch.allclose(debate_outcome(j1, j2, "smooth"), 2 * torch.sigmoid(j1 - j2) - 1)
    with pytest.raises(DebateError, match="outcome mode"):
        debate_outcome(j1, j2, "ternary")  # type: ignore[arg-type]


def test_masked_index_logits_gives_revealed_probability_zero():
    """§4 test 2 (first half): a revealed index has probability exactly 0, the others keep their ratios."""
    logits = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    revealed = torch.zeros(4, 6, dtype=torch.bool)
    revealed[0, [1, 3]] = True
    revealed[2, :5] = True
    probs = torch.softmax(masked_index_logits(logits, revealed), -1)
    assert bool((probs[revealed] == 0).all())
    assert torch.allclose(probs.sum(-1), torch.ones(4))
    keep = ~revealed[0]
    assert torch.allclose(probs[0, keep], torch.softmax(logits[0, keep], -1))
    assert probs[2, 5] == 1.0
    with pytest.raises(DebateError, match="no legal move"):
        masked_index_logits(logits, torch.ones(4, 6, dtype=torch.bool))


def test_sampling_masked_logits_reveals_exactly_l_distinct_units():
    """§4 test 2 (second half): L moves drawn from the masked categorical reveal exactly L distinct units."""
    gen = torch.Generator().manual_seed(1)
    batch, n, length = 64, 6, 4
    revealed = torch.zeros(batch, n, dtype=torch.bool)
    for _ in range(length):
        logits = torch.randn(batch, n, generator=gen) * 5
        choice = torch.multinomial(torch.softmax(masked_index_logits(logits, revealed), -1), 1, generator=gen)
        assert not bool(revealed.gather(1, choice).any())
        revealed.scatter_(1, choice, True)
    assert revealed.sum(-1).tolist() == [length] * batch


def test_justifiable_reward_endpoints_and_mix():
    """§4 test 3 (the mixing half): λ = 0 gives r_env exactly, λ = 1 gives r_debate exactly."""
    r_env, r_deb = torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.0, 1.0, 0.5])
    assert torch.equal(justifiable_reward(r_env, r_deb, 0.0), r_env)
    assert torch.equal(justifiable_reward(r_env, r_deb, 1.0), r_deb)
    assert torch.allclose(justifiable_reward(r_env, r_deb, 0.25), 0.75 * r_env + 0.25 * r_deb)
    with pytest.raises(DebateError, match="lambda"):
        justifiable_reward(r_env, r_deb, 1.5)


def test_judge_bt_loss_is_minus_log_sigmoid_of_the_winner_margin():
    """§4 test 4: judge_bt_loss = -log σ(J_w - J_l), whichever side is preferred."""
    gen = torch.Generator().manual_seed(2)
    j_a, j_b = torch.randn(32, generator=gen) * 3, torch.randn(32, generator=gen) * 3
    pref_a = torch.randint(0, 2, (32,), generator=gen)
    j_w = torch.where(pref_a.bool(), j_a, j_b)
    j_l = torch.where(pref_a.bool(), j_b, j_a)
    expected = -F.logsigmoid(j_w - j_l).mean()
    assert torch.allclose(judge_bt_loss(j_a, j_b, pref_a), expected, atol=1e-6)
    # and it is the loss TRL's RewardTrainer minimises on (chosen, rejected) = (winner, loser)
    assert torch.allclose(judge_bt_loss(j_w, j_l, torch.ones(32)), -F.logsigmoid(j_w - j_l).mean(), atol=1e-6)


def test_render_evidence_masks_by_slot_not_by_content():
    units = ["2+6=08", "8+9=17", "c0"]
    assert render_evidence(units, [1, 2], 6) == "______ 8+9=17 c0    |"
    edited = ["9+9=18", "8+9=17", "c0"]
    assert render_evidence(edited, [1, 2], 6) == render_evidence(units, [1, 2], 6)
    assert render_evidence(["a", "bbb"], [0], 0) == "a _|"
    with pytest.raises(DebateError, match="out of range"):
        render_evidence(units, [3])


def test_moves_cap_and_movers():
    assert moves_cap(4, 6) == 4 and moves_cap(9, 6) == 6 and moves_cap(0, 3) == 0
    assert [mover(1, m) for m in range(4)] == [1, 0, 1, 0]
    with pytest.raises(DebateError):
        moves_cap(-1, 3)


def test_reveal_refuses_a_unit_twice_and_records_it_verbatim():
    units = ["u0", "u1", "u2"]
    t = Transcript(("1", "2"), first=0)
    reveal(t, units, 0, 2)
    reveal(t, units, 1, 0)
    assert t.revealed == [2, 0] and t.by_side(0) == [2] and [u for _, _, u in t.moves] == ["u2", "u0"]
    with pytest.raises(DebateError, match="already revealed"):
        reveal(t, units, 0, 2)
    with pytest.raises(DebateError, match="out of range"):
        reveal(t, units, 0, 3)
