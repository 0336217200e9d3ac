"""The ``harder`` built-in task: generators, the demonstrator's graded bugs, splits, grading, and the quickstart's
outputs left unchanged by the shared ``column_add``."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path

import pytest
import yaml

from alignrl.quickstart.task import TaskSpec, boxed_answer, column_add, make_demonstrations, make_prompts, parse_prompt
from alignrl.rewards.math import math_reward
from alignrl.tasks import TASKS, get_task, harder
from alignrl.tasks.harder import CarryBug, HarderSpec

REPO = Path(__file__).resolve().parents[2]


def _digest(rows: list) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


# Recorded before column_add gained ``drop_if``: the quickstart's rows must stay byte-identical.
QUICKSTART_DIGESTS = {
    0: ("92f305ff24490309417867a865d39e2a53c760374e732d9f8feab66274940aa0",
        "16359c18a3bfcff8861c9c9316fedf3a5a1ef508543e51e3824015bb316f34bb",
        "89fdb609562e42ba722eeabd7c449178c372236a080758a38710f33f4a6f0933",
        "f6b6f0e675405d6482fee187c8dfc39c25bfa8a201a648cc6771c6c910299e62"),
    1: ("abff1c1f17cc9c490626ffa5383e513b218a47e9a5975918b82960eee981e295",
        "522e263f889ebb5a23f5926797b82dea15db42291f7fb4cd58c3e9fd04310caa",
        "565989a3db339442710529cc1b5fdea29d8e7346d22cb76f01142d86ec9ac655",
        "463d3f59d1f55b4eb0d75119d3e1b853a19e30e675862881cfd5ef918cb8f1e9"),
}


@pytest.mark.parametrize("seed", sorted(QUICKSTART_DIGESTS))
def test_quickstart_rows_unchanged(seed):
    expected = QUICKSTART_DIGESTS[seed]
    got = (_digest(make_prompts(2000, seed, "train")), _digest(make_prompts(500, seed, "heldout")),
           _digest(make_demonstrations(2000, seed)),
           _digest(make_demonstrations(2000, seed, TaskSpec(n_digits=4, noise_rate=0.1, bug_column=2))))
    assert got == expected


def test_column_add_drop_if_is_consistent():
    rng = random.Random(0)
    for _ in range(2000):
        a, b = rng.randint(100, 499), rng.randint(100, 499)
        calls: list[tuple[int, int]] = []
        carries, total = column_add(a, b, 3, drop_if=lambda k, s: calls.append((k, s)) or k == 0)
        assert all(s >= 10 for _, s in calls)  # asked only where the column carries
        assert carries[0] == 0
        assert total == a + b - (10 if calls and calls[0][0] == 0 else 0)
        assert column_add(a, b, 3, drop_if=lambda k, s: False) == column_add(a, b, 3)


def test_generators_deterministic_per_seed():
    assert harder.make_demonstrations(500, 3) == harder.make_demonstrations(500, 3)
    assert harder.make_demonstrations(500, 3) != harder.make_demonstrations(500, 4)
    assert harder.harder_prompts(300, 1, "heldout") == harder.harder_prompts(300, 1, "heldout")
    assert harder.harder_prompts(300, 1, "heldout") != harder.harder_prompts(300, 2, "heldout")
    # same prompts as the quickstart for a seed, different (harder) demonstrator
    demos = harder.make_demonstrations(500, 0)
    assert [d["prompt"] for d in demos] == [d["prompt"] for d in make_demonstrations(500, 0)]


def test_prompts_and_heldout_disjoint():
    train = {frozenset(parse_prompt(r["prompt"])) for r in harder.make_demonstrations(20_000, 0)}
    train |= {frozenset(parse_prompt(r["prompt"])) for r in harder.harder_prompts(8192, 1, "train")}
    for seed in (0, 1, 2):
        rows = harder.harder_prompts(500, seed, "heldout")
        assert len({r["prompt"] for r in rows}) == 500
        assert not train & {frozenset(parse_prompt(r["prompt"])) for r in rows}  # a+b and b+a too


def test_demonstrations_follow_the_bugs_and_are_graded_by_math_reward():
    rows = harder.make_demonstrations(4000, 0)
    completions = [str(r["completion"]) for r in rows]
    scores = math_reward([r["prompt"] for r in rows], completions, answer=[r["answer"] for r in rows])
    assert scores == [float(r["correct"]) for r in rows]
    for r in rows:
        a, b = parse_prompt(str(r["prompt"]))
        dropped = [int(e.split("@")[1]) for e in str(r["error"]).split("+") if e]
        assert r["answer"] == str(a + b)
        assert int(boxed_answer(str(r["completion"]))) == a + b - sum(10 ** (c + 1) for c in dropped)
        assert str(r["completion"])[:3] == "".join(map(str, column_add(a, b, 3, drop_if=lambda k, s: k in dropped)[0]))
        assert r["correct"] == (not dropped)
    # the correct completions are the task's solutions
    assert all(r["completion"] == harder.harder_solution(str(r["prompt"])) for r in rows if r["correct"])


def test_bug_rates_as_specified():
    spec = HarderSpec()
    assert [(b.column, b.rate(10), b.rate(19)) for b in spec.bugs] == [(0, 0.95, 0.55), (1, 0.95, 0.55)]
    rows = harder.make_demonstrations(60_000, 0, spec)
    carried: dict[tuple[int, int], list[int]] = {}  # (column, column sum) -> [carries, drops]
    for r in rows:
        a, b = parse_prompt(str(r["prompt"]))
        dropped = {int(e.split("@")[1]) for e in str(r["error"]).split("+") if e}
        carry = 0
        for k in (0, 1):
            s = (a // 10**k) % 10 + (b // 10**k) % 10 + carry
            carry = int(s >= 10) and k not in dropped
            if s >= 10:
                counts = carried.setdefault((k, s), [0, 0])
                counts[0] += 1
                counts[1] += k in dropped
    for (column, s), (n, drops) in carried.items():
        if n >= 500:  # binomial tolerance: 4.5 standard deviations
            p = spec.bug_for(column).rate(s)
            assert abs(drops / n - p) < 4.5 * (p * (1 - p) / n) ** 0.5, (column, s, drops / n, p)
    stats = harder.demonstration_stats(rows)
    assert stats["wrong_share"] == pytest.approx(1 - harder.sampled_pass_rate(spec), abs=0.01)
    assert 0.55 < stats["wrong_share"] < 0.68  # most demonstrations are wrong ...
    assert harder.greedy_ceiling(spec) == pytest.approx(0.3025)  # ... and an imitator's greedy mode is, often


def test_greedy_ceiling_matches_the_quickstart_for_its_bug():
    from alignrl.quickstart.task import greedy_ceiling

    one_bug = HarderSpec(bugs=(CarryBug(1, 0.65, 0.65),))
    assert harder.greedy_ceiling(one_bug) == pytest.approx(greedy_ceiling(TaskSpec()))
    assert harder.sampled_pass_rate(one_bug) == pytest.approx(1 - 0.65 * (1 - greedy_ceiling(TaskSpec())))
    assert harder.greedy_ceiling(HarderSpec(bugs=(CarryBug(0, 0.4, 0.4),))) == 1.0


def test_spec_validation():
    with pytest.raises(ValueError):
        CarryBug(0, 1.5, 0.5)
    with pytest.raises(ValueError):
        HarderSpec(bugs=(CarryBug(0, 0.9, 0.6), CarryBug(0, 0.9, 0.6)))
    with pytest.raises(ValueError):
        HarderSpec(bugs=(CarryBug(3, 0.9, 0.6),))
    with pytest.raises(ValueError, match="unknown task"):
        get_task("nope")
    assert set(TASKS) >= {"quickstart", "harder"}


@pytest.mark.parametrize("name", ["harder", "quickstart"])
def test_prepare_writes_data_files_without_bc(name, tmp_path, monkeypatch):
    """``prepare_task``'s data files, with BC and evaluation stubbed out (the slow part is ``run_sft``)."""
    import alignrl.quickstart.run as qs_run
    import alignrl.sft as sft
    from alignrl.tasks.prepare import PrepareSettings, prepare_task

    trained: list = []
    monkeypatch.setattr(sft, "run_sft", lambda model, tok, rows, out, params: trained.append(params) or
                        Path(out).mkdir(parents=True))
    monkeypatch.setattr(qs_run, "evaluate_model", lambda *a: {"pass_at_1": 0.25})
    base = TaskSpec(n_demonstrations=300, n_heldout=50)
    spec = HarderSpec(task=base) if name == "harder" else base
    task = get_task(name)
    report = prepare_task(name, tmp_path / "p", 2, PrepareSettings(spec=spec, model_preset="test", rl_prompts=64))
    rows = {k: [json.loads(line) for line in Path(v).read_text().splitlines()] for k, v in report["data"].items()}
    assert rows["demonstrations"] == json.loads(json.dumps(task.make_demonstrations(300, 2, spec)))
    assert rows["rl_prompts"] == make_prompts(64, 3, "train", base)
    assert rows["heldout"] == make_prompts(50, 2, "heldout", base)
    assert report["bc_pass_at_1"] == 0.25 and (tmp_path / "p" / "prepare.json").exists()
    assert trained[0].seed == 2 and trained[0].max_steps == (1200 if name == "harder" else 800)
    with pytest.raises(Exception, match="prepared task"):
        prepare_task(name, tmp_path / "p", 2, PrepareSettings(spec=spec, model_preset="test", rl_prompts=64))


def test_recipe_points_at_prepared_seed0():
    recipe = yaml.safe_load((REPO / "recipes" / "grpo_harder.yaml").read_text())
    assert recipe["model"]["path"] == "runs/harder/seed0/bc"
    assert recipe["data"]["train"] == "runs/harder/seed0/data/rl_prompts.jsonl"
    assert recipe["data"]["eval"] == "runs/harder/seed0/data/heldout.jsonl"
    assert recipe["algorithm"]["name"] == "grpo"
