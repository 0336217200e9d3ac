"""The synthetic debate domain: truth known, decisive pair, foils consistent, answers uninformative alone."""

from __future__ import annotations

from collections import Counter

import pytest

from alignrl.debate.domain import (DomainSpec, extract_answer, make_problems, operand_pairs, problem_from_row,
                                   units_for, units_for_prompt)
from alignrl.quickstart.task import column_add, split_of


@pytest.fixture(scope="module")
def problems():
    return make_problems(3000, seed=0)


def test_units_are_the_worked_solution():
    assert units_for(482, 396, 3) == ("2+6=08", "8+9=17", "4+3=07", "c0", "c1", "c0")
    assert units_for_prompt("482+396=") == list(units_for(482, 396, 3))
    assert [len(u) for u in units_for(499, 499, 3)] == [6, 6, 6, 2, 2, 2]


def test_gold_and_foil_are_consistent_carry_flips(problems):
    for p in problems:
        carries, gold = column_add(p.a, p.b, 3)
        assert p.gold == str(gold) == str(p.a + p.b)
        assert p.foil == str(column_add(p.a, p.b, 3, flip_column=p.column)[1]) != p.gold
        assert carries[p.column] == (1 if p.kind == "dropped" else 0)
        assert int(p.gold) - int(p.foil) == (1 if p.kind == "dropped" else -1) * 10 ** (p.column + 1)
        assert split_of(p.a, p.b) == "train"


def test_the_decisive_pair_fixes_the_disputed_digit(problems):
    for p in problems[:500]:
        raw, carry = (p.units[i] for i in p.decisive())
        digit = (int(raw[-1]) + int(carry[-1])) % 10
        k = p.column + 1
        assert int(p.gold[-1 - k]) == digit != int(p.foil[-1 - k])


def test_kinds_follow_p_dropped_and_every_pair_admits_both_orders(problems):
    kinds = Counter(p.kind for p in problems)
    assert abs(kinds["dropped"] / len(problems) - 0.75) < 0.03
    spec = DomainSpec()
    for p in problems[:300]:  # the same two answers could have come the other way round
        upper, lower = max(int(p.gold), int(p.foil)), min(int(p.gold), int(p.foil))
        assert operand_pairs(upper, p.column, 1, "train", spec) and operand_pairs(lower, p.column, 0, "train", spec)
    heldout = make_problems(200, seed=0, split="heldout")
    assert all(split_of(p.a, p.b) == "heldout" for p in heldout)
    assert not {(p.a, p.b) for p in heldout} & {(p.a, p.b) for p in problems}


def test_problems_are_deterministic_distinct_and_round_trip(problems):
    assert make_problems(50, seed=0) == problems[:50]
    assert make_problems(50, seed=1) != problems[:50]
    assert len({(p.a, p.b) for p in problems}) == len(problems)
    assert problem_from_row(problems[0].row()) == problems[0]
    with pytest.raises(ValueError, match="row 7: not a debate problem"):
        problem_from_row({"a": 1}, "row 7")
    with pytest.raises(ValueError, match="n_digits"):
        DomainSpec(n_digits=1)


def test_extract_answer_and_units_of_a_templated_prompt():
    assert extract_answer("010\\boxed{878}") == "878"
    assert extract_answer("no answer") is None
    assert units_for_prompt("<|user|>Add: 482+396=\n\nPut it in a box.") == list(units_for(482, 396, 3))
    with pytest.raises(ValueError, match="no 'a\\+b=' sum"):
        units_for_prompt("hello")
