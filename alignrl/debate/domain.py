"""A synthetic debate domain where the truth is known: the worked solution of the quickstart's addition task.

A problem is a prompt ``a+b=`` of the quickstart task (``alignrl.quickstart.task``: n-digit operands, leading digit
at most 4, the same train / held-out split). Its context is the worked solution cut into ``2 n`` evidence units,
units column first (482+396)::

    2+6=08   8+9=17   4+3=07   c0   c1   c0

Unit k (k < n) is column k's raw digit sum without the carry; unit n + k is the carry out of column k. Digit k of
the sum is the last digit of unit k plus the carry of column k - 1, so the full evidence decides every digit.

The two answers are the gold sum and a **foil** with the carry out of one column ``j`` flipped (the rest of the
arithmetic consistent with it): a *dropped* carry (the quickstart demonstrator's bug; the foil is gold -
10^(j+1)) with probability ``p_dropped``, else a *spurious* one (gold + 10^(j+1)). The answer pair is drawn before
the operands (:func:`make_problems`) and only pairs that admit both orders are kept, so an answer on its own tells
little: only through what its own digits allow (a units digit of 9 rules out a carry out of the units column).

- The **decisive** evidence is the pair (unit j+1, carry j): it fixes the disputed digit.
- Unit j+1 alone **misleads** on spurious-carry problems: a judge trained on random evidence learns that a carry
  into the disputed column is the more likely case (``p_dropped`` > 0.5), so seeing the raw sum alone it prefers
  the digit with the carry, the foil's. Seen with carry j = 0 it is decisive for the truth.
- The other units are distractors (they bear on digits both answers share; carry n-1 is always 0).
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal

from alignrl.debate.game import DebateError, shown_set, slot_text
from alignrl.quickstart.task import TaskSpec, column_add, format_prompt, split_of

Kind = Literal["dropped", "spurious"]
RAW_WIDTH, CARRY_WIDTH = 6, 2  # "x+y=ss" and "c1": the column view lays every slot out at these widths


@dataclass(frozen=True)
class DomainSpec:
    """Knobs of the synthetic domain; the defaults match the quickstart task (3 digits, leading digit <= 4)."""

    n_digits: int = 3
    max_leading_digit: int = 4
    p_dropped: float = 0.75  # share of foils that drop a real carry (the rest add a spurious one)

    def __post_init__(self) -> None:
        if not 2 <= self.n_digits <= 9:
            raise ValueError(f"n_digits must be in [2, 9] (a foil flips a carry into a higher column), got "
                             f"{self.n_digits}")
        if not 1 <= self.max_leading_digit <= 4:
            raise ValueError(f"max_leading_digit must be in [1, 4] (no carry out of the top column), got "
                             f"{self.max_leading_digit}")
        if not 0.0 <= self.p_dropped <= 1.0:
            raise ValueError(f"p_dropped must be in [0, 1], got {self.p_dropped}")

    @property
    def n_units(self) -> int:
        return 2 * self.n_digits

    def task_spec(self) -> TaskSpec:
        return TaskSpec(n_digits=self.n_digits, max_leading_digit=self.max_leading_digit)


@dataclass(frozen=True)
class Problem:
    """One debate problem: the operands, the context units, the gold answer and the foil."""

    a: int
    b: int
    units: tuple[str, ...]
    gold: str
    foil: str
    column: int  # the column whose carry the foil flips; the disputed digit is column + 1
    kind: Kind

    @property
    def prompt(self) -> str:
        return format_prompt(self.a, self.b)

    def decisive(self) -> tuple[int, int]:
        """Indices of the decisive pair: the raw sum of the disputed column and the carry into it."""
        n = len(self.units) // 2
        return self.column + 1, n + self.column

    def row(self) -> dict:
        return {**asdict(self), "units": list(self.units), "prompt": self.prompt}


def units_for(a: int, b: int, n_digits: int) -> tuple[str, ...]:
    """The worked solution of ``a + b`` as ``2 n_digits`` units: raw column sums ``x+y=ss`` (units column first),
    then the carries out ``c0`` / ``c1``."""
    carries, _ = column_add(a, b, n_digits)
    digits = [((a // 10**k) % 10, (b // 10**k) % 10) for k in range(n_digits)]
    return tuple([f"{x}+{y}={x + y:02d}" for x, y in digits] + [f"c{c}" for c in carries])


_SUM = re.compile(r"(\d+)\+(\d+)=")


def units_for_prompt(prompt: str) -> list[str]:
    """Units of the last ``a+b=`` in a prompt (``"482+396="``, or a chat-templated one); the operands' digit count
    decides ``n_digits``. A prompt without one is a :class:`DebateError`."""
    found = _SUM.findall(prompt)
    if not found:
        raise DebateError(f"no 'a+b=' sum in the prompt {prompt[-80:]!r}: give the units in a column instead "
                          f"(units_column)")
    a, b = (int(x) for x in found[-1])
    return list(units_for(a, b, len(str(max(a, b)))))


def column_view(units: Sequence[str], revealed: Sequence[int], answer: str) -> str:
    """The judge's column-aligned view of this domain (``view: columns``): one group ``<raw k><carry k-1>><digit k>;``
    per column k, units column first, then a last group with the top carry and the answer's leading extra digits.
    Unrevealed units are masked by slot (6 and 2 mask characters), never by content; like the paper's judge (a
    masked feature vector beside the decision), the layout is fixed, so checking a digit against its evidence is
    a local comparison. 482+396 with units 1 and 3 revealed, answer 878: ``______  >8;8+9=17c0>7;______  >8;...``"""
    if len(units) % 2:
        raise DebateError(f"the column view needs 2 n units (raw sums, then carries), got {len(units)}")
    n, shown = len(units) // 2, shown_set(units, revealed)
    digits = answer[::-1]
    groups = []
    for k in range(n + 1):
        raw = slot_text(units, k, shown, RAW_WIDTH) if k < n else " " * RAW_WIDTH
        carry = slot_text(units, n + k - 1, shown, CARRY_WIDTH) if k > 0 else " " * CARRY_WIDTH
        digit = (digits[k] if k < len(digits) else "_") if k < n else (digits[n:][::-1] or "_")
        groups.append(f"{raw}{carry}>{digit}")
    return ";".join(groups)


_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def extract_answer(completion: str) -> str | None:
    """The last ``\\boxed{...}`` of a completion, stripped, or None (no answer to argue for)."""
    found = _BOXED.findall(completion)
    return found[-1].strip() if found else None


@lru_cache(maxsize=65_536)
def operand_pairs(total: int, column: int, carry: int, split: str, spec: DomainSpec) -> tuple[tuple[int, int], ...]:
    """Every operand pair of ``split`` with ``a + b == total`` whose carry out of ``column`` is ``carry``."""
    task = spec.task_spec()
    lo, hi = 10 ** (spec.n_digits - 1), (spec.max_leading_digit + 1) * 10 ** (spec.n_digits - 1) - 1
    pairs = []
    for a in range(max(lo, total - hi), min(hi, total - lo) + 1):
        b = total - a
        if split_of(a, b, task) == split and column_add(a, b, spec.n_digits)[0][column] == carry:
            pairs.append((a, b))
    return tuple(pairs)


def make_problems(count: int, seed: int, split: Literal["train", "heldout"] = "train",
                  spec: DomainSpec | None = None) -> list[Problem]:
    """``count`` problems on distinct operand pairs of ``split`` (the quickstart's split), deterministic given
    ``seed``.

    The two answers are drawn first, as an unordered pair {v, v + 10^k} (k uniform in 1..n-1, v uniform among the
    values for which both orders are possible), then which one is gold: the upper one (a dropped-carry foil) with
    probability ``p_dropped``, then the operands uniformly among the pairs that sum to the gold with the carry
    that order needs. Only pairs that admit both orders are drawn, so no answer pair gives its order away; a
    single answer's own digits still hint at it (see the module docstring), the rest is in the evidence.
    """
    spec = spec or DomainSpec()
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    n = spec.n_digits
    lo, hi = 10 ** (n - 1), (spec.max_leading_digit + 1) * 10 ** (n - 1) - 1
    rng = random.Random(f"alignrl-debate/{seed}/{split}")
    seen: set[tuple[int, int]] = set()
    problems: list[Problem] = []
    attempts = 0
    while len(problems) < count:
        attempts += 1
        if attempts > 50 * count + 1000:
            raise ValueError(f"cannot draw {count} distinct {split} problems (drew {len(problems)}); ask for fewer")
        k = rng.randint(1, n - 1)
        low = rng.randint(2 * lo, 2 * hi - 10**k)
        dropped = rng.random() < spec.p_dropped
        up = operand_pairs(low + 10**k, k - 1, 1, split, spec)
        down = operand_pairs(low, k - 1, 0, split, spec)
        if not up or not down:
            continue
        a, b = rng.choice(up if dropped else down)
        if (a, b) in seen:
            continue
        seen.add((a, b))
        gold, foil = (low + 10**k, low) if dropped else (low, low + 10**k)
        problems.append(Problem(a, b, units_for(a, b, n), str(gold), str(foil), k - 1,
                                "dropped" if dropped else "spurious"))
    return problems


def problem_from_row(row: dict, source: str = "row") -> Problem:
    """A :class:`Problem` from a row written by :meth:`Problem.row`; a missing or bad field names ``source``."""
    try:
        return Problem(int(row["a"]), int(row["b"]), tuple(str(u) for u in row["units"]), str(row["gold"]),
                       str(row["foil"]), int(row["column"]), row["kind"])
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{source}: not a debate problem ({type(err).__name__}: {err}); expected the fields "
                         f"a, b, units, gold, foil, column, kind") from err


def write_problems(problems: list[Problem], path: str | Path) -> Path:
    """Write problems as JSONL (one :meth:`Problem.row` a line); the folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(p.row()) + "\n" for p in problems))
    tmp.replace(path)
    return path
