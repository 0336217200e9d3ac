from __future__ import annotations

import random

import pytest

from alignrl.quickstart.task import (
    TaskSpec,
    boxed_answer,
    bug_applies_share,
    column_add,
    demonstration_stats,
    greedy_ceiling,
    make_demonstrations,
    make_prompts,
    parse_prompt,
    solution,
    split_of,
)


def test_splits_are_disjoint_and_sized():
    train = make_prompts(5000, seed=0, split="train")
    held = make_prompts(500, seed=0, split="heldout")
    held_other_seed = make_prompts(500, seed=7, split="heldout")
    assert len(train) == 5000 and len(held) == 500
    assert len({r["prompt"] for r in train}) == 5000  # distinct
    train_pairs = {frozenset(parse_prompt(r["prompt"])) for r in train}
    for rows in (held, held_other_seed):
        assert not train_pairs & {frozenset(parse_prompt(r["prompt"])) for r in rows}  # a+b and b+a too
    assert all(split_of(*parse_prompt(r["prompt"])) == "heldout" for r in held)


@pytest.mark.parametrize("spec", [TaskSpec(), TaskSpec(n_digits=4), TaskSpec(n_digits=4, max_leading_digit=9)])
def test_prompt_format_and_answers(spec):
    lo, hi = 10 ** (spec.n_digits - 1), (spec.max_leading_digit + 1) * 10 ** (spec.n_digits - 1) - 1
    lengths = set()
    for row in make_prompts(300, seed=3, split="heldout", spec=spec):
        a, b = parse_prompt(row["prompt"])
        assert lo <= a <= hi and lo <= b <= hi
        assert row["prompt"] == f"{a}+{b}=" and row["answer"] == str(a + b)
        lengths.add(len(row["answer"]))
    # leading digits <= 4: the sum never gets an extra digit, so every answer has the same length
    assert lengths == ({spec.n_digits} if spec.max_leading_digit <= 4 else {spec.n_digits, spec.n_digits + 1})


def test_default_format():
    spec = TaskSpec()
    assert (spec.n_digits, spec.max_leading_digit, spec.bug_column, spec.separator) == (3, 4, 1, "")
    # 482+396: units 2+6=8 (carry 0), tens 8+9=17 (1), hundreds 4+3+1=8 (0)
    assert solution("482+396=", spec) == "010\\boxed{878}"
    assert solution("4821+3967=", TaskSpec(n_digits=4, separator=" ")) == "0010 \\boxed{8788}"


def test_deterministic_by_seed():
    assert make_prompts(300, seed=1, split="train") == make_prompts(300, seed=1, split="train")
    assert make_prompts(300, seed=1, split="train") != make_prompts(300, seed=2, split="train")
    assert make_demonstrations(300, seed=4) == make_demonstrations(300, seed=4)
    assert make_demonstrations(300, seed=4) != make_demonstrations(300, seed=5)


def test_column_add_matches_addition_and_writes_carries():
    rng = random.Random(0)
    for _ in range(2000):
        a, b = rng.randint(1000, 9999), rng.randint(1000, 9999)
        carries, total = column_add(a, b, 4)
        assert total == a + b
        expect = [int((a % 10 ** (k + 1)) + (b % 10 ** (k + 1)) >= 10 ** (k + 1)) for k in range(4)]
        assert carries == expect
    assert column_add(4821, 3967, 4) == ([0, 0, 1, 0], 8788)


def test_demonstrations_correct_rows_box_the_gold_and_wrong_rows_follow_the_bug():
    spec = TaskSpec()
    rows = make_demonstrations(4000, seed=0, spec=spec)
    for r in rows:
        boxed = boxed_answer(str(r["completion"]))
        assert boxed is not None and boxed.isdigit()  # a plain integer
        assert str(r["completion"]).endswith("}")  # stops after the box (the trainer appends EOS)
        assert r["prompt"] + r["completion"]  # plain strings
        if r["correct"]:
            assert boxed == r["answer"] and r["error"] == ""
        else:
            assert r["error"] == "dropped_carry"
            assert int(boxed) == int(r["answer"]) - 10 ** (spec.bug_column + 1)  # systematic: the tens carry


def test_error_share_matches_the_stated_one():
    spec = TaskSpec()
    stats = demonstration_stats(make_demonstrations(20_000, seed=1, spec=spec))
    expected = spec.bug_rate * bug_applies_share(spec)  # 0.65 x 0.495 = 0.322 (tens digits are uniform)
    assert abs(bug_applies_share(spec) - 0.495) < 1e-9
    assert abs(stats["wrong_share"] - expected) < 0.015
    assert stats["dropped_carry_share"] == stats["wrong_share"]
    assert abs(greedy_ceiling(spec) - 0.505) < 1e-9


def test_error_knobs():
    clean = demonstration_stats(make_demonstrations(3000, seed=0, spec=TaskSpec(bug_rate=0.0)))
    assert clean["wrong_share"] == 0.0
    noisy = demonstration_stats(make_demonstrations(3000, seed=0, spec=TaskSpec(bug_rate=0.0, noise_rate=0.3)))
    assert abs(noisy["flipped_carry_share"] - 0.3) < 0.04 and noisy["wrong_share"] == noisy["flipped_carry_share"]
    units = TaskSpec(bug_column=0, bug_rate=1.0)
    rows = make_demonstrations(2000, seed=0, spec=units)
    assert abs(demonstration_stats(rows)["wrong_share"] - bug_applies_share(units)) < 0.04
    with pytest.raises(ValueError):
        TaskSpec(bug_column=3)
    with pytest.raises(ValueError):
        TaskSpec(bug_rate=1.5)


def test_boxed_answer():
    assert boxed_answer("0010 \\boxed{8788}") == "8788"
    assert boxed_answer("\\boxed{1} then \\boxed{ 22 }") == "22"
    assert boxed_answer("no box") is None
