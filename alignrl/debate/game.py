"""The debate game as pure tensor and list functions (design/algorithms.md §4; Sukovic & Radanovic, ICLR 2024).

A context is a list of N evidence *units* (short texts). Two debaters argue for two answers, side 0 ("A") and
side 1 ("B"); from a random first mover they alternately reveal units **by index**, L in total (capped at N), each
unit at most once and always verbatim. The judge sees only the revealed units (:func:`render_evidence`) and one
answer and returns a scalar J; the outcome compares J(e, a_A) with J(e, a_B) (:func:`debate_outcome`).

Nothing here imports alignrl's models: these functions are what the tests of §4 check directly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

OutcomeMode = Literal["zero_sum", "win01", "diff", "smooth"]
OUTCOME_MODES: tuple[str, ...] = ("zero_sum", "win01", "diff", "smooth")
MASK_CHAR = "_"


class DebateError(ValueError):
    """An illegal move or a malformed debate (a re-revealed unit, an index out of range, a bad setting)."""


def masked_index_logits(logits: Tensor, revealed: Tensor) -> Tensor:
    """``logits`` [B, N] with every revealed index (``revealed`` [B, N] bool) set to -inf, so its probability is
    exactly 0 under any softmax. A row with every index revealed is an error (there is no legal move)."""
    if logits.shape != revealed.shape:
        raise DebateError(f"logits {tuple(logits.shape)} and revealed {tuple(revealed.shape)} must have one shape")
    revealed = revealed.bool()
    if bool(revealed.all(-1).any()):
        raise DebateError("a row has every unit revealed: no legal move is left")
    return logits.masked_fill(revealed, float("-inf"))


def debate_outcome(j1: Tensor, j2: Tensor, mode: OutcomeMode = "zero_sum") -> Tensor:
    """The outcome for the side of answer 1, from judge scores ``j1 = J(e, a1)`` and ``j2 = J(e, a2)``.

    - ``zero_sum``: +1 if j1 > j2, -1 if lower, 0 on a tie (the paper's training outcome);
    - ``win01``: 1 if j1 > j2, 0 if lower, 0.5 on a tie (the paper's code gives ties 0, which penalises agreeing
      with the baseline; §4's edge cases suggest 0.5); constant-sum: outcome(a1, a2) + outcome(a2, a1) = 1;
    - ``diff``: j1 - j2 (the rebuttal-era option);
    - ``smooth``: 2 σ(j1 - j2) - 1, the smoothed difference, zero-sum and in (-1, 1).
    """
    if mode not in OUTCOME_MODES:
        raise DebateError(f"outcome mode must be one of {OUTCOME_MODES}, got {mode!r}")
    j1, j2 = j1.float(), j2.float()
    if mode == "zero_sum":
        return torch.sign(j1 - j2)
    if mode == "win01":
        return (j1 > j2).float() + 0.5 * (j1 == j2).float()
    if mode == "diff":
        return j1 - j2
    return torch.tanh((j1 - j2) / 2.0)  # = 2 σ(j1 - j2) - 1, and exactly odd in floating point


def justifiable_reward(r_env: Tensor, r_deb: Tensor, lam: float) -> Tensor:
    """(1 - λ)·r_env + λ·r_deb, λ in [0, 1]; at λ = 0 exactly r_env and at λ = 1 exactly r_deb."""
    if not 0.0 <= lam <= 1.0:
        raise DebateError(f"lambda must be in [0, 1], got {lam}")
    if lam == 0.0:
        return r_env.clone()
    if lam == 1.0:
        return r_deb.clone()
    return (1.0 - lam) * r_env + lam * r_deb


def judge_bt_loss(j_a: Tensor, j_b: Tensor, pref_a: Tensor) -> Tensor:
    """Bradley-Terry loss of the judge: cross-entropy over the two scores [J(e, a), J(e, b)], the target being the
    preferred one (``pref_a`` 1: a is preferred). Equals the mean of -log σ(J_w - J_l)."""
    return F.cross_entropy(torch.stack([j_a, j_b], -1).float(), 1 - pref_a.long())


def moves_cap(length: int, n_units: int) -> int:
    """L capped at the number of units (never re-reveal a unit): min(L, N)."""
    if length < 0:
        raise DebateError(f"L must be >= 0, got {length}")
    return min(length, n_units)


def mover(first: int, move: int) -> int:
    """The side (0 or 1) that makes move ``move`` (0-based) when side ``first`` opens."""
    if first not in (0, 1):
        raise DebateError(f"the first mover is side 0 or 1, got {first}")
    return (first + move) % 2


def render_evidence(units: Sequence[str], revealed: Sequence[int], slot_width: int = 0) -> str:
    """What the judge reads: every slot in index order, a revealed unit verbatim (padded with spaces to
    ``slot_width``), an unrevealed one as ``slot_width`` mask characters (at least one), joined by spaces, then
    ``|``. The mask depends on the slot only, never on the hidden text, so edits of unrevealed units cannot change
    the rendering (nor the judge's score)."""
    shown = shown_set(units, revealed)
    return " ".join(slot_text(units, i, shown, slot_width) for i in range(len(units))) + "|"


def shown_set(units: Sequence[str], revealed: Sequence[int]) -> set[int]:
    """The revealed indices as a set; one out of range is a :class:`DebateError`."""
    shown = set(revealed)
    bad = [i for i in shown if not 0 <= i < len(units)]
    if bad:
        raise DebateError(f"revealed index {bad[0]} is out of range for {len(units)} units")
    return shown


def slot_text(units: Sequence[str], index: int, shown: set[int], slot_width: int = 0) -> str:
    """Unit ``index`` verbatim (padded to ``slot_width``) if shown, else ``slot_width`` mask characters (at least
    one): the mask depends on the slot only, never on the hidden text."""
    return units[index].ljust(slot_width) if index in shown else MASK_CHAR * max(slot_width, 1)


@dataclass
class Transcript:
    """One debate: who opened, every move as (side, unit index, unit text), the judge's scores of both answers on
    the final evidence and the outcome for side A (its negation, or 1 - it in ``win01``, is side B's)."""

    answers: tuple[str, str]
    first: int
    moves: list[tuple[int, int, str]] = field(default_factory=list)
    scores: tuple[float, float] | None = None
    outcome: float | None = None

    @property
    def revealed(self) -> list[int]:
        """Revealed indices in order (a passed turn, index -1, reveals nothing)."""
        return [index for _, index, _ in self.moves if index >= 0]

    def by_side(self, side: int) -> list[int]:
        return [index for s, index, _ in self.moves if s == side and index >= 0]

    def record(self) -> dict:
        """A JSON-able row (for the per-sample transcript log)."""
        return {"answers": list(self.answers), "first": self.first, "revealed": self.revealed,
                "sides": [s for s, i, _ in self.moves if i >= 0], "units": [u for _, i, u in self.moves if i >= 0],
                "judge": list(self.scores) if self.scores is not None else None, "outcome": self.outcome}


def reveal(transcript: Transcript, units: Sequence[str], side: int, index: int) -> None:
    """Append side ``side``'s move revealing unit ``index`` verbatim; re-revealing or an index out of range is a
    :class:`DebateError`."""
    if not 0 <= index < len(units):
        raise DebateError(f"side {side} chose unit {index}, out of range for {len(units)} units")
    if index in transcript.revealed:
        raise DebateError(f"side {side} chose unit {index}, which is already revealed")
    transcript.moves.append((side, index, units[index]))
