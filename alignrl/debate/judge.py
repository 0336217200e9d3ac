"""The judge at scoring time: a sequence-classification reward model that reads only the revealed evidence.

The judge's input (:func:`judge_input`) depends on its ``view``: ``plain`` (any domain, the LLM translation)
is ``render_evidence(units, revealed, slot_width)`` as the prompt and the answer as the response; ``columns`` (the
synthetic domain, like the paper's masked feature vector beside the decision) is one text,
:func:`alignrl.debate.domain.column_view`, with no separate prompt. Either is encoded with
:func:`alignrl.reward_model.pairs.encode` (prompt + text + EOS), exactly as in training and as ``alignrl score``
encodes a row ``{"prompt": ..., "response": ...}`` (or ``{"response": ...}``). A judge folder written by
``alignrl debate judge`` holds ``debate_judge.json`` with the ``view``, ``slot_width`` and ``L`` it was trained
with.

Scores are cached by token sequence (greedy debaters ask for the same evidence many times); the model is in eval
mode throughout (no dropout, BatchNorm-free Llama heads).
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignrl.debate.game import render_evidence

JUDGE_FILE = "debate_judge.json"
VIEWS = ("plain", "columns")


def judge_input(units: Sequence[str], revealed: Sequence[int], answer: str, slot_width: int = 6,
                view: str = "plain") -> tuple[str | None, str]:
    """``(prompt, response)`` the judge reads for ``answer`` behind the revealed units (see the module docstring)."""
    if view == "plain":
        return render_evidence(units, revealed, slot_width), answer
    if view == "columns":
        from alignrl.debate.domain import column_view

        return None, column_view(units, revealed, answer)
    raise ValueError(f"judge view must be one of {VIEWS}, got {view!r}")


@dataclass
class JudgeInfo:
    """What a judge folder records about how it reads evidence."""

    slot_width: int = 6
    length: int = 4  # L: evidence units per debate it was trained for
    view: str = "plain"
    domain: dict | None = None

    @classmethod
    def read(cls, folder: str | Path) -> JudgeInfo:
        path = Path(folder) / JUDGE_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text())
            return cls(slot_width=int(data.get("slot_width", 6)), length=int(data.get("length", 4)),
                       view=str(data.get("view", "plain")), domain=data.get("domain"))
        except (ValueError, TypeError, AttributeError) as err:
            raise ValueError(f"{path}: not a debate judge description ({err})") from err

    def write(self, folder: str | Path) -> None:
        (Path(folder) / JUDGE_FILE).write_text(json.dumps(self.__dict__, indent=2) + "\n")


class Judge:
    """J(e, a) for batches of (units, revealed indices, answer); see the module docstring."""

    def __init__(self, model: Any, tokenizer: Any, slot_width: int = 6, batch_size: int = 256,
                 max_length: int | None = None, cache_size: int = 200_000, view: str = "plain"):
        from alignrl.reward_model.scorer import SequenceScorer

        if view not in VIEWS:
            raise ValueError(f"judge view must be one of {VIEWS}, got {view!r}")
        self.view = view
        self.scorer = SequenceScorer(model, tokenizer, batch_size=batch_size, max_length=max_length)
        self.tokenizer, self.slot_width, self.cache_size = tokenizer, slot_width, cache_size
        self._cache: OrderedDict[tuple[int, ...], float] = OrderedDict()
        self.calls = 0  # sequences asked for (cache hits included)
        self.forwards = 0  # sequences the model actually read

    @classmethod
    def load(cls, path: str | Path, device: str = "auto", dtype: str = "float32", batch_size: int = 256,
             slot_width: int | None = None) -> Judge:
        """A judge folder (``alignrl debate judge`` output, or any one-label sequence classifier)."""
        from alignrl.reward_model.scorer import load_reward_model

        model, tokenizer = load_reward_model(path, device=device, dtype=dtype, key="judge")
        info = JudgeInfo.read(path)
        return cls(model, tokenizer, slot_width=info.slot_width if slot_width is None else slot_width,
                   batch_size=batch_size, view=info.view)

    def encode(self, units: Sequence[str], revealed: Sequence[int], answer: str) -> list[int]:
        from alignrl.reward_model.pairs import encode

        prompt, response = judge_input(units, revealed, answer, self.slot_width, self.view)
        return encode(self.tokenizer, prompt, response, self.scorer.max_length).input_ids

    def score(self, units: Sequence[Sequence[str]], revealed: Sequence[Sequence[int]],
              answers: Sequence[str]) -> torch.Tensor:
        """One float32 score per (units, revealed, answer) triple, on the CPU."""
        if not len(units) == len(revealed) == len(answers):
            raise ValueError(f"judge: {len(units)} contexts, {len(revealed)} evidence sets, {len(answers)} answers")
        ids = [tuple(self.encode(u, r, a)) for u, r, a in zip(units, revealed, answers)]
        return self.score_ids(ids)

    def score_ids(self, ids: Sequence[tuple[int, ...]]) -> torch.Tensor:
        self.calls += len(ids)
        missing = list(dict.fromkeys(seq for seq in ids if seq not in self._cache))
        fresh: dict[tuple[int, ...], float] = {}
        if missing:
            self.forwards += len(missing)
            fresh = dict(zip(missing, self.scorer.score_ids([list(seq) for seq in missing]).tolist()))
            self._cache.update(fresh)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return torch.tensor([fresh[seq] if seq in fresh else self._cache[seq] for seq in ids], dtype=torch.float32)
