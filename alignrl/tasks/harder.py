"""The ``harder`` built-in task: the quickstart's column addition, with a demonstrator that has two graded bugs.

Prompts, splits and the completion format are the quickstart's (``alignrl.quickstart.task``; 3-digit operands with
leading digits <= 4, every carry written before ``\\boxed{sum}``)::

    482+396=010\\boxed{878}

**The demonstrator's bugs** (systematic, so a correct-answer reward can fix them by RL): it drops the carry out of
the units column and, independently, the carry out of the tens column, each with a probability that depends on the
column's sum (carry in included): ``rate_at_10`` when the sum is 10 (it "barely" carries) down to ``rate_at_19``
at 19, linearly in between. A dropped carry is written as 0 and not added to the next column, so the rest of the
arithmetic stays consistent with it and the boxed sum is short by ``10**(column + 1)`` per dropped carry.

With every rate above 0.5 a model that imitates the demonstrator drops every carry of those two columns under greedy
decoding, so its greedy pass@1 sits near ``greedy_ceiling`` (the share of prompts where neither column carries, about
30%). Under sampling it still writes each right carry with probability ``1 - rate(column sum)``: often where the
rate is low (large column sums), rarely where it is high (sums of 10-11). That is the signal RL amplifies, and it
is graded: a policy-gradient method flips the easy contexts first and the rare, hard ones (both columns carrying with
small sums) last, so greedy pass@1 climbs gradually instead of in one jump as on the quickstart, and a fixed RL
budget leaves methods apart. Everything is deterministic given the seed; held-out and train prompts are disjoint.

Measured with the defaults (60,000 demonstrations, 61% wrong; the quickstart's tiny model and BC settings but 1200
steps, since 800 left one of seeds 0-2 short of the loss floor of 0.042; 2-core CPU, one thread): BC greedy
held-out pass@1 29.6 / 28.8 / 32.8% for seeds 0 / 1 / 2 (ceiling 30.25%); GRPO with the quickstart's settings
(32 prompts x 8 samples a step, lr 1e-4) then reaches 77.6 / 77.6 / 62.6% after 23 steps, the comparison budget of
``recipes/grpo_harder.yaml`` (about 25 s a run), and ~95% after 60 steps. The quickstart's BC model reaches 99%
in 10.
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass, field

from alignrl.quickstart.task import (
    Split,
    TaskSpec,
    column_add,
    format_completion,
    make_prompts,
    parse_prompt,
    solution,
)


@dataclass(frozen=True)
class CarryBug:
    """The demonstrator drops the carry out of ``column`` (0 = units) with a probability linear in the column sum."""

    column: int
    rate_at_10: float
    """Drop probability when the column sum (carry in included) is 10."""
    rate_at_19: float
    """Drop probability when the column sum is 19 (the largest possible)."""

    def __post_init__(self) -> None:
        if self.column < 0:
            raise ValueError("CarryBug.column must be >= 0")
        for name in ("rate_at_10", "rate_at_19"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"CarryBug.{name} must be in [0, 1]")

    def rate(self, column_sum: int) -> float:
        """Probability of dropping the carry of a column whose sum is ``column_sum`` (10-19)."""
        return self.rate_at_10 + (self.rate_at_19 - self.rate_at_10) * (column_sum - 10) / 9


def _default_bugs() -> tuple[CarryBug, ...]:
    return (CarryBug(0, rate_at_10=0.95, rate_at_19=0.55), CarryBug(1, rate_at_10=0.95, rate_at_19=0.55))


@dataclass(frozen=True)
class HarderSpec:
    """The harder task: ``task`` gives prompts, splits, format and sizes (its own bug fields are not used);
    ``bugs`` replace the quickstart demonstrator's single bug."""

    task: TaskSpec = field(default_factory=lambda: TaskSpec(bug_rate=0.0))
    bugs: tuple[CarryBug, ...] = field(default_factory=_default_bugs)

    def __post_init__(self) -> None:
        columns = [bug.column for bug in self.bugs]
        if len(set(columns)) != len(columns):
            raise ValueError("HarderSpec.bugs: at most one bug per column")
        if any(c >= self.task.n_digits for c in columns):
            raise ValueError(f"HarderSpec.bugs: columns must be < n_digits ({self.task.n_digits})")

    def bug_for(self, column: int) -> CarryBug | None:
        return next((bug for bug in self.bugs if bug.column == column), None)


def demonstrate(prompt: str, rng: random.Random, spec: HarderSpec | None = None) -> dict[str, object]:
    """The buggy demonstrator's completion for one prompt. ``error`` lists the dropped carries, e.g.
    ``"dropped_carry@0+dropped_carry@1"`` (``""`` when none)."""
    spec = spec or HarderSpec()
    a, b = parse_prompt(prompt)
    dropped: list[int] = []

    def drop_if(column: int, column_sum: int) -> bool:
        bug = spec.bug_for(column)
        if bug is not None and rng.random() < bug.rate(column_sum):
            dropped.append(column)
            return True
        return False

    carries, total = column_add(a, b, spec.task.n_digits, drop_if=drop_if)
    return {
        "prompt": prompt,
        "completion": format_completion(carries, total, spec.task.separator),
        "answer": str(a + b),
        "correct": total == a + b,
        "error": "+".join(f"dropped_carry@{c}" for c in dropped),
    }


def make_demonstrations(n: int, seed: int, spec: HarderSpec | None = None) -> list[dict[str, object]]:
    """``n`` demonstrations on distinct train prompts (the quickstart's prompts for ``seed``), deterministic given
    ``seed``; rows as ``alignrl.quickstart.task.make_demonstrations``."""
    spec = spec or HarderSpec()
    rng = random.Random(f"alignrl-harder/{seed}/demonstrator")
    return [demonstrate(row["prompt"], rng, spec) for row in make_prompts(n, seed, "train", spec.task)]


def harder_prompts(n: int, seed: int, split: Split = "train", spec: HarderSpec | None = None) -> list[dict[str, str]]:
    """``n`` distinct prompts of ``split`` with their gold answers (the quickstart's generator and splits)."""
    return make_prompts(n, seed, split, (spec or HarderSpec()).task)


def harder_solution(prompt: str, spec: HarderSpec | None = None) -> str:
    """The correct completion for ``prompt``."""
    return solution(prompt, (spec or HarderSpec()).task)


def demonstration_stats(rows: list[dict[str, object]]) -> dict[str, float]:
    """Share of wrong demonstrations, and of demonstrations that dropped each column's carry."""
    n = max(len(rows), 1)
    stats: dict[str, float] = {"n": len(rows), "wrong_share": sum(not r["correct"] for r in rows) / n}
    columns = sorted({int(e.split("@")[1]) for r in rows for e in str(r["error"]).split("+") if e})
    for c in columns:
        stats[f"dropped_carry@{c}_share"] = sum(f"dropped_carry@{c}" in str(r["error"]) for r in rows) / n
    return stats


def _column_pairs(spec: HarderSpec, column: int) -> list[tuple[int, int]]:
    digits = range(1, spec.task.max_leading_digit + 1) if column == spec.task.n_digits - 1 else range(10)
    return [(x, y) for x in digits for y in digits]


def _exact_pass(spec: HarderSpec, drop_probability) -> float:
    """P(no carry dropped) over uniform operands, where a carrying bug column drops its carry with
    ``drop_probability(bug, column_sum)``; exact, by enumerating the digits of the bug columns."""
    last = max((bug.column for bug in spec.bugs), default=-1)

    def walk(column: int, carry: int) -> float:
        if column > last:
            return 1.0
        pairs = _column_pairs(spec, column)
        bug = spec.bug_for(column)
        total = 0.0
        for x, y in pairs:
            s = x + y + carry
            if s < 10:
                total += walk(column + 1, 0)
            elif bug is None:
                total += walk(column + 1, 1)
            else:
                total += (1 - drop_probability(bug, s)) * walk(column + 1, 1)  # a dropped carry is always wrong
        return total / len(pairs)

    return walk(0, 0)


def greedy_ceiling(spec: HarderSpec | None = None) -> float:
    """Greedy pass@1 of a perfect imitator of the demonstrator (it drops a carry wherever the rate is > 0.5)."""
    spec = spec or HarderSpec()
    return _exact_pass(spec, lambda bug, s: float(bug.rate(s) > 0.5))


def sampled_pass_rate(spec: HarderSpec | None = None) -> float:
    """Pass rate of a perfect imitator under sampling at temperature 1 (= the demonstrations' correct share)."""
    spec = spec or HarderSpec()
    return _exact_pass(spec, lambda bug, s: bug.rate(s))


def context_rates(spec: HarderSpec | None = None) -> dict[str, float]:
    """Drop probability for every (bug column, column sum) context: ``{"col0_sum10": 0.95, ...}``."""
    spec = spec or HarderSpec()
    return {f"col{bug.column}_sum{s}": bug.rate(s) for bug, s in itertools.product(spec.bugs, range(10, 20))}
