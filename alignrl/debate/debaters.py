"""Debaters: who reveals which unit. Every debater returns unit *indices*; the game inserts the units verbatim.

- :class:`RandomDebater`: a uniformly random unrevealed unit.
- :class:`GreedyDebater`: the fixed strategy, greedy by judge score: the unrevealed unit that maximises
  J(e + u, own answer) - J(e + u, other answer). ``isolated=True`` is one-sided selection: e is only the debater's
  own units, as if no opponent spoke (it still cannot re-reveal the opponent's units). Arguing for the wrong
  answer, the same strategy is the *confuser*.
- :class:`LMDebater`: a causal LM served by a rollout engine. It reads :func:`debater_prompt` (the whole context,
  both answers, its side, the revealed mask) and emits one index token, decoded under
  ``SamplingParams.allowed_token_ids`` restricted to the unrevealed indices' labels: an illegal move has
  probability exactly 0, and the token's log-prob is the action's log-prob.
"""

from __future__ import annotations

import random
import re
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from alignrl.debate.game import DebateError, render_evidence

SIDES = "AB"
DEFAULT_LABELS = "0123456789"
_MASK = re.compile(r"\|([^|>]*)>\s*$")


@dataclass
class MoveState:
    """What the side to move sees: the context, both answers (A's, B's), its side, what is revealed (in order),
    its own revealed units and the moves left in the debate (this one included)."""

    units: Sequence[str]
    answers: tuple[str, str]
    side: int
    revealed: list[int]
    own: list[int]
    moves_left: int

    def unrevealed(self) -> list[int]:
        shown = set(self.revealed)
        return [i for i in range(len(self.units)) if i not in shown]


def debater_prompt(units: Sequence[str], answers: tuple[str, str], side: int, revealed: Sequence[int],
                   labels: str = DEFAULT_LABELS, slot_width: int = 0) -> str:
    """``<context>A<answer A>|B<answer B>|<side>|<mask>>``: the mask has one character per unit, its label when
    revealed and ``_`` otherwise; the debater's completion is one label."""
    if len(units) > len(labels):
        raise DebateError(f"{len(units)} units but only {len(labels)} index labels ({labels!r})")
    context = render_evidence(units, range(len(units)), slot_width)
    shown = set(revealed)
    mask = "".join(labels[i] if i in shown else "_" for i in range(len(units)))
    return f"{context}A{answers[0]}|B{answers[1]}|{SIDES[side]}|{mask}>"


def unrevealed_from_prompt(text: str, labels: str = DEFAULT_LABELS) -> list[int]:
    """The unrevealed indices of a :func:`debater_prompt` (read from its mask); a text without a mask is an error."""
    found = _MASK.search(text)
    if found is None:
        raise DebateError(f"not a debater prompt (no '|<mask>>' at the end): {text[-60:]!r}")
    return [i for i, ch in enumerate(found.group(1)) if ch == "_"]


def label_token_ids(tokenizer: Any, labels: str) -> list[int]:
    """The token id of each label; a label that is not exactly one token is a :class:`DebateError`."""
    ids = []
    for label in labels:
        encoded = tokenizer(label, add_special_tokens=False)["input_ids"]
        if len(encoded) != 1:
            raise DebateError(f"index label {label!r} is {len(encoded)} tokens for this tokenizer; every label must "
                              f"be one token (choose other labels)")
        ids.append(encoded[0])
    if len(set(ids)) != len(ids):
        raise DebateError(f"index labels {labels!r} do not map to distinct tokens")
    return ids


class Debater(ABC):
    """Chooses one unrevealed unit index per state."""

    name = "debater"

    @abstractmethod
    def choose(self, states: list[MoveState]) -> list[int]:
        """One unrevealed index per state."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`; stateless debaters ignore it."""


class RandomDebater(Debater):
    name = "random"

    def __init__(self, seed: int | str = 0):
        self.rng = random.Random(seed)

    def choose(self, states: list[MoveState]) -> list[int]:
        return [self.rng.choice(s.unrevealed()) for s in states]

    def state_dict(self) -> dict:
        version, internal, gauss = self.rng.getstate()
        return {"rng": [version, list(internal), gauss]}

    def load_state_dict(self, state: dict) -> None:
        if "rng" in state:
            version, internal, gauss = state["rng"]
            self.rng.setstate((version, tuple(internal), gauss))


class GreedyDebater(Debater):
    """Greedy by judge score (see the module docstring); one batched judge call per move for all states."""

    def __init__(self, judge: Any, isolated: bool = False):
        self.judge, self.isolated = judge, isolated
        self.name = "isolated" if isolated else "greedy"

    def choose(self, states: list[MoveState]) -> list[int]:
        units, evidence, own, other, owner = [], [], [], [], []
        for row, s in enumerate(states):
            base = list(s.own if self.isolated else s.revealed)
            for u in s.unrevealed():
                units.append(s.units)
                evidence.append(base + [u])
                own.append(s.answers[s.side])
                other.append(s.answers[1 - s.side])
                owner.append((row, u))
        if not owner:
            raise DebateError("no unrevealed unit left to choose")
        margin = (self.judge.score(units, evidence, own) - self.judge.score(units, evidence, other)).tolist()
        best: dict[int, tuple[float, int]] = {}
        for (row, u), m in zip(owner, margin):
            if row not in best or m > best[row][0]:
                best[row] = (m, u)
        return [best[row][1] for row in range(len(states))]


class LMDebater(Debater):
    """A language-model debater behind a rollout engine (see the module docstring). ``temperature`` 0 is greedy;
    sampling draws its seed from ``seed`` and a call counter, so a run is reproducible."""

    def __init__(self, engine: Any, tokenizer: Any, labels: str = DEFAULT_LABELS, temperature: float = 0.0,
                 slot_width: int = 0, seed: int = 0, name: str = "lm"):
        self.engine, self.tokenizer, self.labels = engine, tokenizer, labels
        self.label_ids = label_token_ids(tokenizer, labels)
        self.temperature, self.slot_width, self.seed, self.name = temperature, slot_width, seed, name
        self.calls = 0
        self.last_logprobs: list[float] = []

    def prompts(self, states: list[MoveState]) -> list[str]:
        return [debater_prompt(s.units, s.answers, s.side, s.revealed, self.labels, self.slot_width) for s in states]

    def choose(self, states: list[MoveState]) -> list[int]:
        from alignrl.rollout import SamplingParams

        if not states:
            return []
        ids = [self.tokenizer(text)["input_ids"] for text in self.prompts(states)]
        allowed = [[self.label_ids[i] for i in s.unrevealed()] for s in states]
        params = SamplingParams(n=1, temperature=self.temperature, max_new_tokens=1, allowed_token_ids=allowed,
                                seed=None if self.temperature == 0 else self.seed * 1_000_003 + self.calls)
        self.calls += 1
        groups = self.engine.generate(ids, params)
        index_of = {tok: i for i, tok in enumerate(self.label_ids)}
        choices, self.last_logprobs = [], []
        for s, group in zip(states, groups):
            token = group[0].token_ids[0]
            if token not in index_of or index_of[token] not in s.unrevealed():
                raise DebateError(f"the engine returned token {token}, not an unrevealed index label: it ignored "
                                  f"allowed_token_ids")
            choices.append(index_of[token])
            self.last_logprobs.append(group[0].logprobs[0])
        return choices

    def state_dict(self) -> dict:
        return {"calls": self.calls}

    def load_state_dict(self, state: dict) -> None:
        self.calls = int(state.get("calls", 0))
