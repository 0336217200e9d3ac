"""A synthetic, verifiable reasoning task for the offline quickstart: column addition with written carries.

A prompt is ``"482+396="``: both operands have exactly ``n_digits`` digits (default 3, no leading zeros) and a
leading digit of at most ``max_leading_digit`` (default 4, so the sum never gets an extra digit): every prompt, and
every correct completion, has the same length. A completion first writes the carry out of every column, units column
first, then the sum as a plain integer inside ``\\boxed{}``, and stops (the tokenizer's EOS follows)::

    482+396=010\\boxed{878}

Here units 2+6=8 (carry 0), tens 8+9=17 (carry 1), hundreds 4+3+1=8 (carry 0). Each carry depends on the column's two
digits and the carry written just before it, and each answer digit on its column's two digits and the carry into it,
so the answer is read off the intermediate steps. (``TaskSpec(n_digits=4, separator=" ")`` gives
``4821+3967=0010 \\boxed{8788}``; the defaults are the ones a 1M-parameter model learns reliably in ~2.5 minutes
on two CPU cores, see ``alignrl.quickstart.tiny_model``.)

**The demonstrator's bug** (systematic, so that a correct-answer reward can fix it by RL): when column
``bug_column`` (0 = units; the default 1 = tens) produces a carry, the demonstrator drops it (writes carry 0 and
adds the next column without it) with probability ``bug_rate`` (default 0.65). The rest of its arithmetic is then
consistent with the dropped carry, so the boxed answer is ``gold - 10**(bug_column + 1)``. The bug applies to about
half of the prompts (a tens carry happens for 49.5% of uniform operands), so about 0.65 x 0.495 = 32% of the
demonstrations are wrong (``demonstration_stats`` reports the actual share: 32.5% of the default 60,000). Because
``bug_rate > 0.5``, a model that imitates the demonstrator well drops the carry under *greedy* decoding every time it
applies: its greedy pass@1 sits near ``greedy_ceiling(spec)`` (50.5%), while sampling still writes the right carry
about 35% of the time, the signal that RL with a verifier reward amplifies. Optional scattered noise
(``noise_rate``) flips one random carry instead; such errors are *not* systematic and barely move greedy accuracy.

Splits: a pair of operands belongs to the held-out split when a fixed hash of the unordered pair falls in the
held-out bucket (a ``heldout_share`` of the space), so train and held-out prompts are disjoint for every seed and
``a+b`` and ``b+a`` always share a split. Everything is deterministic given the seed.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

Split = Literal["train", "heldout"]

_MASK64 = (1 << 64) - 1
_SPLIT_SALT = 0x5EED_A11C_0FFE_E123  # fixed: the split does not depend on the seed


@dataclass(frozen=True)
class TaskSpec:
    """Knobs of the quickstart task and of its imperfect demonstrator. The defaults are the quickstart's settings."""

    n_digits: int = 3
    """Digits of each operand (no leading zeros); the sum has ``n_digits`` (or, with ``max_leading_digit`` > 4,
    ``n_digits + 1``) digits. With 4, the quickstart's tiny model sometimes never finds the operands' tens digits for
    the boxed answer within the BC budget (in about half of the seeds measured); with 3 it did in all of them."""
    max_leading_digit: int = 4
    """Largest leading digit of an operand (1-9). 4 or less keeps every sum at ``n_digits`` digits: with sums of
    varying length the position of each answer digit varies too, and a tiny model learns much more slowly."""
    n_demonstrations: int = 60_000
    """Number of BC demonstrations (distinct train prompts) the quickstart uses."""
    n_heldout: int = 500
    """Number of held-out prompts the quickstart evaluates greedy pass@1 on."""
    heldout_share: float = 1 / 16
    """Share of the operand-pair space reserved for the held-out split."""
    bug_column: int = 1
    """Column whose carry the demonstrator drops (0 = units, 1 = tens, ...; the last column's carry is the sum's
    leading digit)."""
    bug_rate: float = 0.65
    """Probability that the demonstrator drops the ``bug_column`` carry when there is one. Keep it > 0.5 so that
    greedy decoding of an imitating model follows the bug (that is what RL then fixes)."""
    separator: str = ""
    """Text between the carries and ``\\boxed{`` (none by default: every token between the operands and the answer
    lengthens the attention distance the model must learn)."""
    noise_rate: float = 0.0
    """Probability that a demonstration has one uniformly chosen carry flipped (scattered, non-systematic errors)."""

    def __post_init__(self) -> None:
        if self.n_digits < 1:
            raise ValueError("n_digits must be >= 1")
        if not 1 <= self.max_leading_digit <= 9:
            raise ValueError("max_leading_digit must be in [1, 9]")
        if not 0 <= self.bug_column < self.n_digits:
            raise ValueError(f"bug_column must be in [0, {self.n_digits - 1}]")
        for name in ("bug_rate", "noise_rate"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if not 0.0 < self.heldout_share < 1.0:
            raise ValueError("heldout_share must be in (0, 1)")


def _mix64(x: int) -> int:
    """splitmix64 finaliser: a cheap, well-mixed, platform-independent integer hash."""
    x = (x + 0x9E3779B97F4A7C15) & _MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK64
    return x ^ (x >> 31)


def split_of(a: int, b: int, spec: TaskSpec | None = None) -> Split:
    """Which split the prompt ``a+b=`` (or ``b+a=``) belongs to; independent of the seed."""
    spec = spec or TaskSpec()
    lo, hi = min(a, b), max(a, b)
    h = _mix64((lo * 1_000_003 + hi) ^ _SPLIT_SALT)
    return "heldout" if h < spec.heldout_share * 2**64 else "train"


def _operand_range(spec: TaskSpec) -> tuple[int, int]:
    lo = 10 ** (spec.n_digits - 1)
    return lo, (spec.max_leading_digit + 1) * lo - 1


def format_prompt(a: int, b: int) -> str:
    return f"{a}+{b}="


def format_completion(carries: list[int], total: int, sep: str = " ") -> str:
    """Carries, units column first, then the sum in ``\\boxed{}``: ``"0010 \\boxed{8788}"``."""
    return "".join(str(c) for c in carries) + sep + "\\boxed{" + str(total) + "}"


def solution(prompt: str, spec: TaskSpec | None = None) -> str:
    """The correct completion for ``prompt``."""
    spec = spec or TaskSpec()
    carries, total = column_add(*parse_prompt(prompt), spec.n_digits)
    return format_completion(carries, total, spec.separator)


def column_add(
    a: int, b: int, n_digits: int, drop_column: int | None = None, flip_column: int | None = None,
    drop_if: Callable[[int, int], bool] | None = None,
) -> tuple[list[int], int]:
    """Add column by column; returns (carry out of each column, units first; the resulting sum).

    ``drop_column``: that column's carry is dropped (written 0 and not added to the next column).
    ``flip_column``: that column's carry is flipped. The result is consistent with the written carries.
    ``drop_if(column, column_sum)``: called, units column first, for every column whose sum (carry in included)
    produces a carry; a true result drops that carry (the carries written before it decide the later sums).
    """
    carries: list[int] = []
    digits: list[int] = []
    carry = 0
    for k in range(n_digits):
        s = (a // 10**k) % 10 + (b // 10**k) % 10 + carry
        digits.append(s % 10)
        carry = int(s >= 10)
        if k == drop_column or (carry and drop_if is not None and drop_if(k, s)):
            carry = 0
        if k == flip_column:
            carry = 1 - carry
        carries.append(carry)
    total = sum(d * 10**k for k, d in enumerate(digits)) + carry * 10**n_digits
    return carries, total


def make_prompts(n: int, seed: int, split: Split = "train", spec: TaskSpec | None = None) -> list[dict[str, str]]:
    """``n`` distinct prompts of ``split``, deterministic given ``seed``: ``[{"prompt": "4821+3967=", "answer":
    "8788"}, ...]``. Train and held-out prompts never overlap (for any seeds)."""
    spec = spec or TaskSpec()
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    lo, hi = _operand_range(spec)
    space = (hi - lo + 1) ** 2 * (spec.heldout_share if split == "heldout" else 1 - spec.heldout_share)
    if n > 0.5 * space:
        raise ValueError(f"asked for {n} distinct {split} prompts from a space of about {int(space)}")
    rng = random.Random(f"alignrl-quickstart/{seed}/{split}")
    seen: set[tuple[int, int]] = set()
    rows: list[dict[str, str]] = []
    while len(rows) < n:
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if (a, b) in seen or split_of(a, b, spec) != split:
            continue
        seen.add((a, b))
        rows.append({"prompt": format_prompt(a, b), "answer": str(a + b)})
    return rows


def parse_prompt(prompt: str) -> tuple[int, int]:
    m = re.fullmatch(r"(\d+)\+(\d+)=", prompt)
    if m is None:
        raise ValueError(f"not a task prompt: {prompt!r}")
    return int(m.group(1)), int(m.group(2))


def demonstrate(prompt: str, rng: random.Random, spec: TaskSpec | None = None) -> dict[str, object]:
    """The imperfect demonstrator's completion for one prompt (see the module docstring for its bug)."""
    spec = spec or TaskSpec()
    a, b = parse_prompt(prompt)
    true_carries, gold = column_add(a, b, spec.n_digits)
    drop = spec.bug_column if (true_carries[spec.bug_column] == 1 and rng.random() < spec.bug_rate) else None
    flip = rng.randrange(spec.n_digits) if (spec.noise_rate > 0 and rng.random() < spec.noise_rate) else None
    carries, total = column_add(a, b, spec.n_digits, drop_column=drop, flip_column=flip)
    error = "dropped_carry" if drop is not None else ""
    if flip is not None:
        error = (error + "+" if error else "") + "flipped_carry"
    return {
        "prompt": prompt,
        "completion": format_completion(carries, total, spec.separator),
        "answer": str(gold),
        "correct": total == gold,
        "error": error,
    }


def make_demonstrations(n: int, seed: int, spec: TaskSpec | None = None) -> list[dict[str, object]]:
    """``n`` demonstrations on distinct train prompts, deterministic given ``seed``.

    Each row: ``prompt``, ``completion`` (carries, then ``\\boxed{...}``; no EOS: the trainer appends it),
    ``answer`` (the gold sum), ``correct`` (whether the boxed sum equals the gold) and ``error`` (``""``,
    ``"dropped_carry"``, ``"flipped_carry"`` or both joined by ``+``).
    """
    spec = spec or TaskSpec()
    prompts = make_prompts(n, seed, "train", spec)
    rng = random.Random(f"alignrl-quickstart/{seed}/demonstrator")
    return [demonstrate(p["prompt"], rng, spec) for p in prompts]


def demonstration_stats(rows: list[dict[str, object]]) -> dict[str, float]:
    """Shares of wrong demonstrations overall and by kind of error."""
    n = max(len(rows), 1)
    return {
        "n": len(rows),
        "wrong_share": sum(not r["correct"] for r in rows) / n,
        "dropped_carry_share": sum("dropped_carry" in str(r["error"]) for r in rows) / n,
        "flipped_carry_share": sum("flipped_carry" in str(r["error"]) for r in rows) / n,
    }


def bug_applies_share(spec: TaskSpec | None = None) -> float:
    """Exact share of uniform prompts where column ``bug_column`` produces a carry (where the bug can strike)."""
    spec = spec or TaskSpec()
    # distribution of the carry into each column, by dynamic programming over uniform digit pairs
    p_carry = 0.0
    for k in range(spec.bug_column + 1):
        digits = range(1, spec.max_leading_digit + 1) if k == spec.n_digits - 1 else range(10)
        pairs = [(x, y) for x in digits for y in digits]
        p_carry = sum(
            (1 - p_carry) * (x + y >= 10) + p_carry * (x + y + 1 >= 10) for x, y in pairs
        ) / len(pairs)
    return p_carry


def greedy_ceiling(spec: TaskSpec | None = None) -> float:
    """Greedy pass@1 of a perfect imitator of the demonstrator: it follows the bug wherever it applies when
    ``bug_rate > 0.5`` (and never when it is below). Scattered noise below 0.5 a carry does not change the mode."""
    spec = spec or TaskSpec()
    return 1.0 - bug_applies_share(spec) if spec.bug_rate > 0.5 else 1.0


_BOXED = re.compile(r"\\boxed\{([^{}]*)\}")


def boxed_answer(text: str) -> str | None:
    """The content of the last ``\\boxed{...}`` in ``text`` (stripped), or None. A convenience for quick checks;
    the project's math grader is the reference."""
    found = _BOXED.findall(text)
    return found[-1].strip() if found else None
