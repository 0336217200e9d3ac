"""Play a batch of debates: alternate moves from each first mover, reveal verbatim, then ask the judge.

Each move asks the side to move for all debates where it is that side's turn in one batched call, so an LM
debater runs one ``generate`` per move and side, and a greedy debater one judge batch. A side whose debater is
``None`` passes its turns (one-sided selection: only the other side's units are revealed).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alignrl.debate.debaters import Debater, MoveState
from alignrl.debate.game import OutcomeMode, Transcript, debate_outcome, moves_cap, mover, reveal


@dataclass
class DebateSetup:
    """One debate to play: the context's units and the two answers (side A's, side B's)."""

    units: Sequence[str]
    answers: tuple[str, str]


def play_moves(setups: Sequence[DebateSetup], debaters: tuple[Debater | None, Debater | None], length: int,
               first: Sequence[int], transcripts: list[Transcript] | None = None) -> list[Transcript]:
    """Play up to ``min(length, N)`` moves per debate (continuing ``transcripts`` when given: the moves already in
    them count). Returns the transcripts, unjudged."""
    if len(first) != len(setups):
        raise ValueError(f"{len(setups)} debates but {len(first)} first movers")
    if transcripts is None:
        transcripts = [Transcript(tuple(s.answers), int(f)) for s, f in zip(setups, first)]  # type: ignore[arg-type]
    caps = [moves_cap(length, len(s.units)) for s in setups]
    start = min((len(t.moves) for t in transcripts), default=0)
    for move in range(start, max(caps, default=0)):
        for side in (0, 1):
            rows = [i for i, t in enumerate(transcripts)
                    if len(t.moves) == move and move < caps[i] and mover(t.first, move) == side]
            debater = debaters[side]
            if not rows:
                continue
            if debater is None:  # a silent side passes: record nothing, but the move is spent
                for i in rows:
                    transcripts[i].moves.append((side, -1, ""))
                continue
            states = [MoveState(setups[i].units, tuple(setups[i].answers), side,  # type: ignore[arg-type]
                                transcripts[i].revealed, transcripts[i].by_side(side), caps[i] - move)
                      for i in rows]
            for i, choice in zip(rows, debater.choose(states)):
                reveal(transcripts[i], setups[i].units, side, int(choice))
    for t in transcripts:
        t.moves = [m for m in t.moves if m[1] >= 0]  # drop the passes
    return transcripts


def judge_transcripts(setups: Sequence[DebateSetup], transcripts: list[Transcript], judge: Any,
                      mode: OutcomeMode = "zero_sum") -> list[Transcript]:
    """Score both answers on each debate's revealed evidence and set the outcome for side A."""
    if not setups:
        return transcripts
    units = [s.units for s in setups]
    revealed = [t.revealed for t in transcripts]
    ja = judge.score(units, revealed, [s.answers[0] for s in setups])
    jb = judge.score(units, revealed, [s.answers[1] for s in setups])
    outcome = debate_outcome(ja, jb, mode).tolist()
    for t, a, b, o in zip(transcripts, ja.tolist(), jb.tolist(), outcome):
        t.scores, t.outcome = (a, b), o
    return transcripts


def play_debates(setups: Sequence[DebateSetup], debaters: tuple[Debater | None, Debater | None], judge: Any,
                 length: int, first: Sequence[int], mode: OutcomeMode = "zero_sum") -> list[Transcript]:
    """Play and judge: the full game of §4 for a batch."""
    return judge_transcripts(setups, play_moves(setups, debaters, length, first), judge, mode)
