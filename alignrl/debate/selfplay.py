"""Self-play training of an LM debater on its index actions, through ``alignrl.loop.train`` like any policy.

One generation is one ordinary RL run (``recipes/debate/selfplay_quickstart.yaml``: GRPO, the ``debate_hf``
engine, the ``debate_move`` reward): its prompts are debate *states* written by :func:`state_rows`, its K samples
per state are K candidate moves, and each move's reward is the outcome of the debate finished by the frozen
copy of the previous generation playing both sides. Generation g starts from generation g-1's final policy and
plays against it; generation 0 plays against its own starting model.

States: a problem of the synthetic domain, its gold and foil assigned to sides A and B by a coin, a random first
mover, and a random legal prefix of m moves (m uniform in 0..L-1, indices uniform among the unrevealed: the
positions a debate can reach, each side's turn equally often).
"""

from __future__ import annotations

import json
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from alignrl.debate.debaters import DEFAULT_LABELS, debater_prompt
from alignrl.debate.domain import Problem
from alignrl.debate.game import moves_cap, mover


def state_rows(problems: Sequence[Problem], count: int, length: int, seed: int | str,
               labels: str = DEFAULT_LABELS, slot_width: int = 0) -> list[dict[str, Any]]:
    """``count`` debate states (see the module docstring), deterministic given ``seed``."""
    rng = random.Random(f"alignrl-debate-states/{seed}")
    rows = []
    for _ in range(count):
        p = problems[rng.randrange(len(problems))]
        gold_side = rng.randrange(2)
        answers = [p.gold, p.foil] if gold_side == 0 else [p.foil, p.gold]
        first = rng.randrange(2)
        cap = moves_cap(length, len(p.units))
        made = rng.randrange(cap) if cap > 0 else 0
        revealed = rng.sample(range(len(p.units)), made)
        side = mover(first, made)
        prompt = debater_prompt(p.units, (answers[0], answers[1]), side, revealed, labels, slot_width)
        rows.append({"prompt": prompt, "answer": p.gold, "units": list(p.units), "answers": answers, "side": side,
                     "revealed": revealed, "first": first, "length": length, "gold_side": gold_side, "kind": p.kind})
    return rows


def write_rows(rows: list[dict[str, Any]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
    return path


def final_checkpoint(run_dir: str | Path, max_steps: int) -> Path:
    return Path(run_dir) / f"checkpoint-{max_steps:06d}"


def run_selfplay(recipe: str | Path, out: str | Path, init: str | Path, problems: Sequence[Problem],
                 generations: int = 2, states_per_generation: int = 2000, length: int = 4, seed: int = 0,
                 overrides: Sequence[str] = (), judge: str | None = None) -> Path:
    """Run ``generations`` self-play generations into ``out/gen<g>`` and return the last debater folder.

    A generation whose final checkpoint exists is skipped (rerunning resumes at the first unfinished one; an
    unfinished one resumes from its newest checkpoint)."""
    from alignrl.config import load_config
    from alignrl.loop import train

    out = Path(out)
    current = Path(init)
    for g in range(generations):
        run_dir = out / f"gen{g}"
        states = out / "states" / f"gen{g}.jsonl"
        if not states.is_file():
            write_rows(state_rows(problems, states_per_generation, length, f"{seed}/{g}"), states)
        config = load_config(recipe, [*overrides, f"model.path={current}", f"data.train={states}",
                                      f"trainer.output_dir={run_dir}", f"trainer.seed={seed * 1000 + g}"])
        terms = [t for t in config.reward.functions if t.name == "debate_move"]
        if not terms:
            raise ValueError(f"{recipe}: a self-play recipe needs a debate_move reward term")
        terms[0].kwargs["opponent"] = str(current)  # the frozen copy of the previous generation
        if judge is not None:
            terms[0].kwargs["judge"] = str(judge)
        done = final_checkpoint(run_dir, config.trainer.max_steps)
        if not (done / "config.json").is_file():
            train(config, resume="auto")
        current = done
    return current
