"""``debate``: the justifiable reward (1 - λ)·r_env + λ·r_debate, as one reward term.

    reward:
      functions:
        - name: debate
          kwargs: {lam: 0.5, env: math, judge: runs/debate_judge, baseline_model: runs/quickstart/bc}

For every sample, the policy's answer (``answer_fn`` of the completion) and a baseline answer (``baseline_column``
of the prompt row, or the greedy answer of the frozen ``baseline_model``, generated once per prompt and cached)
are debated over the prompt's evidence units (``units_column``, or ``units_fn`` of the prompt): side A argues for
the policy's answer, side B for the baseline's, from a random first mover, L units in all; the judge then scores
both answers on the revealed units and r_debate is the outcome for side A (``mode``). ``env`` is the inner reward
(any registered reward, built with its ``env_kwargs``) giving r_env.

λ = 0 runs no debate at all (no judge or debater is even loaded); λ = 1 gives r_debate. Edge cases: a policy answer
equal to the baseline's is not debated and gets the tie value (0 in ``zero_sum``, ``diff`` and ``smooth``, 0.5 in
``win01``); a completion without an answer is not debated and gets the losing value (-1, or 0 in ``win01``).

Debaters (``debater``): ``greedy`` (the fixed strategy, greedy by judge score), ``random``, or a folder of an LM
debater (served by the run's engine factory, decoding constrained to unrevealed indices). Each sample's debate is
appended to ``<run_dir>/debate_transcripts.jsonl`` (revealed indices, sides, units, judge scores, outcome). The
state saved in checkpoints (the first-mover RNG, the debaters' state, counters) makes a resumed run continue
with the same draws.
"""

from __future__ import annotations

import importlib
import json
import random
from pathlib import Path
from typing import Any, Literal

from alignrl.rewards.base import Reward, RewardContext, RewardInputs, RewardOutput, build_reward, run_reward
from alignrl.rewards.registry import RewardError, register_reward

MODES = ("zero_sum", "win01", "diff", "smooth")
TIE = {"zero_sum": 0.0, "win01": 0.5, "diff": 0.0, "smooth": 0.0}
LOSS = {"zero_sum": -1.0, "win01": 0.0, "diff": -1.0, "smooth": -1.0}


def _callable(spec: str, key: str) -> Any:
    """``package.module:function`` imported; anything else is a :class:`RewardError` naming ``key``."""
    module_name, _, attr = spec.partition(":")
    try:
        fn = getattr(importlib.import_module(module_name), attr, None) if attr else None
    except ImportError as err:
        raise RewardError(f"reward 'debate': {key} '{spec}': cannot import '{module_name}': {err}") from err
    if not callable(fn):
        raise RewardError(f"reward 'debate': {key} '{spec}' is not 'package.module:function' naming a function")
    return fn


def _rng_state(rng: random.Random) -> list:
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


def _set_rng_state(rng: random.Random, state: list) -> None:
    rng.setstate((state[0], tuple(state[1]), state[2]))


@register_reward("debate")
class DebateReward(Reward):
    """See the module docstring."""

    def __init__(self, lam: float = 0.5, env: str = "math", env_kwargs: dict[str, Any] | None = None,
                 judge: str | None = None, length: int = 4, mode: Literal["zero_sum", "win01", "diff", "smooth"]
                 = "win01", debater: str = "greedy", baseline_column: str | None = None,
                 baseline_model: str | None = None, baseline_max_new_tokens: int = 32, units_column: str | None = None,
                 units_fn: str = "alignrl.debate.domain:units_for_prompt",
                 answer_fn: str = "alignrl.debate.domain:extract_answer", labels: str = "0123456789",
                 judge_batch_size: int = 256, log_transcripts: bool = True):
        if not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must be in [0, 1], got {lam}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if length < 1:
            raise ValueError(f"length (L) must be >= 1, got {length}")
        if lam > 0 and judge is None:
            raise ValueError("lam > 0 needs a judge folder (kwargs.judge)")
        if lam > 0 and (baseline_column is None) == (baseline_model is None):
            raise ValueError("lam > 0 needs exactly one of baseline_column and baseline_model")
        self.lam, self.env_name, self.env_kwargs = float(lam), env, dict(env_kwargs or {})
        self.judge_path, self.length, self.mode, self.debater_spec = judge, int(length), mode, debater
        self.baseline_column, self.baseline_model = baseline_column, baseline_model
        self.baseline_max_new_tokens, self.units_column = baseline_max_new_tokens, units_column
        self.units_fn_name, self.answer_fn_name, self.labels = units_fn, answer_fn, labels
        self.judge_batch_size, self.log_transcripts = judge_batch_size, log_transcripts
        self.env = build_reward(env, self.env_kwargs)
        self.units_fn = _callable(units_fn, "units_fn") if units_column is None else None
        self.answer_fn = _callable(answer_fn, "answer_fn")
        self.rng = random.Random(0)
        self.judge: Any = None
        self.debaters: tuple[Any, Any] | None = None
        self.baseline_cache: dict[str, str | None] = {}
        self.baseline_engine: Any = None
        self.baseline_tokenizer: Any = None
        self.log_path: Path | None = None
        self.debates = 0
        self.samples = 0
        self.last_step = 0  # the training step of the last scored batch (transcript rows after it go on resume)

    # ----------------------------------------------------------------------------------------------- lifecycle
    def setup(self, context: RewardContext) -> None:
        self.env.setup(context)
        rank = context.accelerator.process_index if context.accelerator is not None else 0
        self.rng = random.Random(f"alignrl-debate-reward/{context.seed}/{rank}")
        if context.run_dir is not None and self.log_transcripts and self.lam > 0:
            name = "debate_transcripts.jsonl" if rank == 0 else f"debate_transcripts.rank{rank}.jsonl"
            self.log_path = Path(context.run_dir) / name
        if self.lam == 0:
            return  # no debate is ever run: load nothing
        from alignrl.debate.debaters import GreedyDebater, LMDebater, RandomDebater
        from alignrl.debate.judge import Judge
        from alignrl.learner.models import ModelLoadError

        device = str(context.device)
        try:
            self.judge = Judge.load(self.judge_path, device=device, batch_size=self.judge_batch_size)
        except ModelLoadError as err:
            raise RewardError(f"reward 'debate': {err}") from err
        if self.debater_spec == "greedy":
            self.debaters = (GreedyDebater(self.judge), GreedyDebater(self.judge))
        elif self.debater_spec == "random":
            self.debaters = (RandomDebater(f"{context.seed}/{rank}/A"), RandomDebater(f"{context.seed}/{rank}/B"))
        else:
            engine, tokenizer = self._engine(context, self.debater_spec)
            one = LMDebater(engine, tokenizer, self.labels, seed=context.seed)
            self.debaters = (one, one)
        if self.baseline_model is not None:
            self.baseline_engine, self.baseline_tokenizer = self._engine(context, self.baseline_model)

    def _engine(self, context: RewardContext, path: str) -> tuple[Any, Any]:
        from transformers import AutoTokenizer

        if context.engine_factory is None:
            raise RewardError("reward 'debate': a model-served debater or baseline needs an engine factory")
        from alignrl.config.loader import _looks_local

        if _looks_local(path) and not Path(path).exists():
            raise RewardError(f"reward 'debate': model folder not found: {path}")
        tokenizer = AutoTokenizer.from_pretrained(path)
        engine = context.engine_factory("hf", None, model_path=path, tokenizer=tokenizer, dtype="auto",
                                        device=str(context.device))
        return engine, tokenizer

    def close(self) -> None:
        self.env.close()
        engines = [e for e in (self.baseline_engine, *self._debater_engines()) if e is not None]
        for engine in {id(e): e for e in engines}.values():
            engine.close()
        self.judge = self.debaters = self.baseline_engine = None

    def _debater_engines(self) -> list[Any]:
        return [d.engine for d in (self.debaters or ()) if getattr(d, "engine", None) is not None]

    # -------------------------------------------------------------------------------------------------- scoring
    def score(self, inputs: RewardInputs) -> RewardOutput:
        import torch

        from alignrl.debate.game import justifiable_reward

        self.samples += len(inputs)
        self.last_step = max(self.last_step, int(inputs.step or 0))
        env = run_reward(self.env_name, self.env, inputs)
        r_env = torch.tensor(env.scores, dtype=torch.float32)
        info = {f"env_{k}": v for k, v in env.info.items()}
        info["env"] = env.scores
        if self.lam == 0:
            return RewardOutput(env.scores, info)
        if self.judge is None:
            raise RewardError("reward 'debate': score() called before setup()")
        r_deb, played, records = self._debate(inputs)
        total = justifiable_reward(r_env, torch.tensor(r_deb, dtype=torch.float32), self.lam).tolist()
        self._log(inputs, records, env.scores, r_deb, total)
        info.update(debate=r_deb, debated=[float(p) for p in played])
        return RewardOutput(total, info)

    def _debate(self, inputs: RewardInputs) -> tuple[list[float], list[bool], list[dict | None]]:
        from alignrl.debate.play import DebateSetup, play_debates

        answers = [self.answer_fn(c) for c in inputs.completions]
        baselines = self._baselines(inputs)
        units = self._units(inputs)
        r_deb = [0.0] * len(inputs)
        records: list[dict | None] = [None] * len(inputs)
        rows = []
        for i, (y, y_b) in enumerate(zip(answers, baselines)):
            if y is None:
                r_deb[i] = LOSS[self.mode]
            elif y_b is not None and str(y) == str(y_b):
                r_deb[i] = TIE[self.mode]
            else:
                rows.append(i)
        first = [self.rng.randrange(2) for _ in rows]
        setups = [DebateSetup(units[i], (str(answers[i]), str(baselines[i]))) for i in rows]
        transcripts = play_debates(setups, self.debaters, self.judge, self.length, first, self.mode)
        for i, t in zip(rows, transcripts):
            r_deb[i] = float(t.outcome)
            records[i] = t.record()
        self.debates += len(rows)
        played = [r is not None for r in records]
        return r_deb, played, records

    def _units(self, inputs: RewardInputs) -> list[list[str]]:
        if self.units_column is not None:
            if self.units_column not in inputs.columns:
                raise RewardError(f"reward 'debate': units_column '{self.units_column}' is not a dataset column; "
                                  f"columns: {sorted(inputs.columns)}")
            values = inputs.columns[self.units_column]
        else:
            values = [self.units_fn(p) for p in inputs.prompts]
        for i, value in enumerate(values):
            if not isinstance(value, (list, tuple)) or not all(isinstance(u, str) for u in value) or not value:
                raise RewardError(f"reward 'debate': sample {i}: evidence units must be a non-empty list of "
                                  f"strings, got {type(value).__name__}")
        return [list(v) for v in values]

    def _baselines(self, inputs: RewardInputs) -> list[str | None]:
        if self.baseline_column is not None:
            if self.baseline_column not in inputs.columns:
                raise RewardError(f"reward 'debate': baseline_column '{self.baseline_column}' is not a dataset "
                                  f"column; columns: {sorted(inputs.columns)}")
            return [None if v is None else str(v) for v in inputs.columns[self.baseline_column]]
        missing = list(dict.fromkeys(p for p in inputs.prompts if p not in self.baseline_cache))
        if missing:
            from alignrl.rollout import SamplingParams

            ids = [self.baseline_tokenizer(p)["input_ids"] for p in missing]
            params = SamplingParams(n=1, temperature=0.0, max_new_tokens=self.baseline_max_new_tokens)
            for prompt, group in zip(missing, self.baseline_engine.generate(ids, params)):
                self.baseline_cache[prompt] = self.answer_fn(group[0].text)
        return [self.baseline_cache[p] for p in inputs.prompts]

    def _log(self, inputs: RewardInputs, records: list[dict | None], r_env: list[float], r_deb: list[float],
             total: list[float]) -> None:
        if self.log_path is None:
            return
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a", encoding="utf-8") as f:
            for i, record in enumerate(records):
                row = {"step": inputs.step, "sample": i, "prompt": inputs.prompts[i], "r_env": r_env[i],
                       "r_debate": r_deb[i], "reward": total[i], "debated": record is not None, **(record or {})}
                f.write(json.dumps(row) + "\n")

    # ---------------------------------------------------------------------------------------------------- state
    def state_dict(self) -> dict:
        state: dict[str, Any] = {"rng": _rng_state(self.rng), "debates": self.debates, "samples": self.samples,
                                 "env": self.env.state_dict(), "last_step": self.last_step}
        if self.debaters is not None:
            state["debaters"] = [d.state_dict() for d in self.debaters]
        return state

    def load_state_dict(self, state: dict) -> None:
        if "rng" in state:
            _set_rng_state(self.rng, state["rng"])
        self.debates, self.samples = int(state.get("debates", 0)), int(state.get("samples", 0))
        self.env.load_state_dict(state.get("env", {}))
        if self.debaters is not None and "debaters" in state:
            for debater, saved in zip(self.debaters, state["debaters"]):
                debater.load_state_dict(saved)
        if "last_step" in state:
            self.last_step = int(state["last_step"])
            self._drop_transcripts_after(self.last_step)

    def _drop_transcripts_after(self, step: int) -> None:
        """On resume: the transcript rows of steps after the checkpoint (they are played again) and any line cut
        short by the interruption go, so every step's debates appear once."""
        if self.log_path is None or not self.log_path.is_file():
            return
        kept = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            try:
                if int(json.loads(line)["step"]) <= step:
                    kept.append(line + "\n")
            except (ValueError, KeyError, TypeError):
                continue
        partial = self.log_path.with_name(self.log_path.name + ".tmp")
        partial.write_text("".join(kept), encoding="utf-8")
        partial.replace(self.log_path)

    def describe(self) -> dict:
        return {**super().describe(), "lam": self.lam, "env": self.env_name, "env_kwargs": self.env_kwargs,
                "judge": self.judge_path, "length": self.length, "mode": self.mode, "debater": self.debater_spec,
                "baseline_column": self.baseline_column, "baseline_model": self.baseline_model,
                "units_column": self.units_column, "units_fn": self.units_fn_name, "answer_fn": self.answer_fn_name}


from alignrl.debate.move_reward import DebateMoveReward  # noqa: E402,F401  (registers "debate_move")
