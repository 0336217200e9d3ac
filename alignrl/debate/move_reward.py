"""``debate_move``: the reward of one debater move, for self-play training through the ordinary RL loop.

A prompt row is a debate *state* (:func:`alignrl.debate.selfplay.state_rows`): the context ``units``, the two
``answers`` (A's, B's), the ``first`` mover, the ``revealed`` indices so far, the ``side`` to move, the debate
``length`` L; its prompt is :func:`alignrl.debate.debaters.debater_prompt`. The completion is one index label.
The reward applies that move, finishes the debate with the **frozen opponent** playing both sides (``opponent``: a
debater folder, refreshed each self-play generation; ``greedy`` or ``random`` for the fixed strategies), asks the
judge, and returns the outcome from the mover's side: +1 / -1 / 0 (``zero_sum``), so side A's moves get the
outcome and side B's its negation. One model plays both sides; the side is flagged in the prompt.

A completion that is not the label of an unrevealed unit (only possible without constrained decoding, e.g. the
plain ``hf`` engine) loses (``illegal`` is logged). The state (continuation sampling counter, counters) is saved
in checkpoints.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from alignrl.rewards.base import Reward, RewardContext, RewardInputs, RewardOutput
from alignrl.rewards.registry import RewardError, register_reward

COLUMNS = ("units", "answers", "side", "revealed", "first", "length")


@register_reward("debate_move")
class DebateMoveReward(Reward):
    """See the module docstring."""

    def __init__(self, judge: str, opponent: str = "greedy", mode: Literal["zero_sum", "smooth"] = "zero_sum",
                 labels: str = "0123456789", temperature: float = 1.0, judge_batch_size: int = 256):
        if mode not in ("zero_sum", "smooth"):
            raise ValueError(f"mode must be 'zero_sum' or 'smooth' (zero-sum outcomes), got {mode!r}")
        self.judge_path, self.opponent_spec, self.mode, self.labels = judge, opponent, mode, labels
        self.temperature, self.judge_batch_size = float(temperature), judge_batch_size
        self.judge: Any = None
        self.opponent: Any = None
        self.moves = 0
        self.illegal = 0

    def setup(self, context: RewardContext) -> None:
        from alignrl.debate.debaters import GreedyDebater, LMDebater, RandomDebater
        from alignrl.debate.judge import Judge
        from alignrl.learner.models import ModelLoadError

        try:
            self.judge = Judge.load(self.judge_path, device=str(context.device), batch_size=self.judge_batch_size)
        except ModelLoadError as err:
            raise RewardError(f"reward 'debate_move': {err}") from err
        rank = context.accelerator.process_index if context.accelerator is not None else 0
        if self.opponent_spec == "greedy":
            self.opponent = GreedyDebater(self.judge)
        elif self.opponent_spec == "random":
            self.opponent = RandomDebater(f"{context.seed}/{rank}/opponent")
        else:
            from transformers import AutoTokenizer

            if not Path(self.opponent_spec).exists():
                raise RewardError(f"reward 'debate_move': opponent folder not found: {self.opponent_spec}")
            if context.engine_factory is None:
                raise RewardError("reward 'debate_move': an LM opponent needs an engine factory")
            tokenizer = AutoTokenizer.from_pretrained(self.opponent_spec)
            engine = context.engine_factory("hf", None, model_path=self.opponent_spec, tokenizer=tokenizer,
                                            dtype="float32", device=str(context.device))
            self.opponent = LMDebater(engine, tokenizer, self.labels, temperature=self.temperature,
                                      seed=context.seed * 7919 + rank)

    def score(self, inputs: RewardInputs) -> RewardOutput:
        from alignrl.debate.game import Transcript, mover, reveal
        from alignrl.debate.play import DebateSetup, judge_transcripts, play_moves

        if self.judge is None:
            raise RewardError("reward 'debate_move': score() called before setup()")
        missing = [c for c in COLUMNS if c not in inputs.columns]
        if missing:
            raise RewardError(f"reward 'debate_move': the prompt rows lack {missing} (build them with "
                              f"alignrl.debate.selfplay.state_rows); columns: {sorted(inputs.columns)}")
        col = inputs.columns
        rewards = [0.0] * len(inputs)
        illegal = [0.0] * len(inputs)
        rows, setups, transcripts, lengths = [], [], [], []
        for i, completion in enumerate(inputs.completions):
            units, answers = list(col["units"][i]), tuple(str(a) for a in col["answers"][i])
            first, side, revealed = int(col["first"][i]), int(col["side"][i]), [int(r) for r in col["revealed"][i]]
            t = Transcript(answers, first)  # type: ignore[arg-type]
            for move, index in enumerate(revealed):
                reveal(t, units, mover(first, move), index)
            if mover(first, len(revealed)) != side:
                raise RewardError(f"reward 'debate_move': sample {i}: side {side} is not the side to move after "
                                  f"{len(revealed)} moves from first mover {first}")
            label = completion.strip()
            index = self.labels.index(label) if len(label) == 1 and label in self.labels else -1
            if not 0 <= index < len(units) or index in revealed:
                rewards[i], illegal[i] = -1.0, 1.0
                continue
            reveal(t, units, side, index)
            rows.append(i)
            setups.append(DebateSetup(units, answers))  # type: ignore[arg-type]
            transcripts.append(t)
            lengths.append(int(col["length"][i]))
        for length in sorted(set(lengths)):  # finish every debate with the frozen opponent on both sides
            group = [k for k, n in enumerate(lengths) if n == length]
            play_moves([setups[k] for k in group], (self.opponent, self.opponent), length,
                       [transcripts[k].first for k in group], [transcripts[k] for k in group])
        judge_transcripts(setups, transcripts, self.judge, self.mode)
        for i, t in zip(rows, transcripts):
            side = int(col["side"][i])
            rewards[i] = float(t.outcome) if side == 0 else -float(t.outcome)
        self.moves += len(rows)
        self.illegal += int(sum(illegal))
        return RewardOutput(rewards, {"illegal": illegal})

    def state_dict(self) -> dict:
        return {"moves": self.moves, "illegal": self.illegal,
                "opponent": self.opponent.state_dict() if self.opponent is not None else {}}

    def load_state_dict(self, state: dict) -> None:
        self.moves, self.illegal = int(state.get("moves", 0)), int(state.get("illegal", 0))
        if self.opponent is not None:
            self.opponent.load_state_dict(state.get("opponent", {}))

    def close(self) -> None:
        engine = getattr(self.opponent, "engine", None)
        if engine is not None:
            engine.close()
        self.judge = self.opponent = None

    def describe(self) -> dict:
        return {**super().describe(), "judge": self.judge_path, "opponent": self.opponent_spec, "mode": self.mode,
                "labels": self.labels, "temperature": self.temperature}
