"""Train the debate judge: the Bradley-Terry loss of ``alignrl rm train`` on fresh random evidence subsets.

The judge is a one-output sequence classifier trained with TRL's ``RewardTrainer`` (loss -log σ(J(e, gold) -
J(e, foil)), which is :func:`alignrl.debate.game.judge_bt_loss`) through the pieces of
:mod:`alignrl.reward_model.train` (``RewardConfig``, model loading, metrics file, final save). What differs is
the data: each training row is a problem of the synthetic domain, and :class:`SubsetCollator` draws a **fresh
random subset** of its evidence units every time the row is batched, renders it (unrevealed units masked) and
encodes both answers behind the same evidence. ``judge.subset``: ``exact`` draws L-subsets (the paper), ``up_to``
draws a size uniformly in 0..N first (a judge that also reads full evidence and the partial evidence greedy
debaters try).

The folder written is a Hugging Face sequence classifier (``alignrl score`` scores it), plus
``debate_judge.json`` (slot width, L, domain), ``eval.json`` (held-out accuracy with full evidence, random L units
and none), ``heldout_pairs.jsonl`` (held-out pairs with random L-unit evidence, in ``alignrl score``'s format),
``metrics.jsonl`` and ``README.md``.
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from alignrl.debate.domain import DomainSpec, Problem, make_problems
from alignrl.debate.judge import JudgeInfo, judge_input
from alignrl.reward_model.train import RMModelConfig, RMParams

TINY_PREFIX = "tiny:"


@dataclass
class JudgeDataConfig:
    """The synthetic domain the judge learns on (:class:`alignrl.debate.domain.DomainSpec` plus sizes)."""

    n_digits: int = 3
    max_leading_digit: int = 4
    p_dropped: float = 0.75
    train_problems: int = 20_000
    test_problems: int = 500
    seed: int = 0  # the problems' seed (train and held-out operands never overlap)

    def spec(self) -> DomainSpec:
        return DomainSpec(self.n_digits, self.max_leading_digit, self.p_dropped)


@dataclass
class JudgeGameConfig:
    length: int = 4  # L, evidence units per debate
    subset: Literal["exact", "up_to"] = "up_to"
    slot_width: int = 6  # characters per rendered slot (plain view; the domain's widest unit is 6)
    view: Literal["plain", "columns"] = "columns"  # how the judge reads evidence and answer (alignrl.debate.judge)

    def __post_init__(self) -> None:
        if self.subset not in ("exact", "up_to"):
            raise ValueError(f"judge.subset must be 'exact' or 'up_to', got {self.subset!r}")
        if self.view not in ("plain", "columns"):
            raise ValueError(f"judge.view must be 'plain' or 'columns', got {self.view!r}")
        if self.length < 0 or self.slot_width < 0:
            raise ValueError("judge.length and judge.slot_width must be >= 0")


@dataclass
class JudgeRunConfig:
    model: RMModelConfig = field(default_factory=lambda: RMModelConfig(path="tiny:quickstart"))
    data: JudgeDataConfig = field(default_factory=JudgeDataConfig)
    judge: JudgeGameConfig = field(default_factory=JudgeGameConfig)
    rm: RMParams = field(default_factory=RMParams)
    tiny: dict[str, Any] = field(default_factory=dict)  # LlamaConfig overrides for a ``tiny:<preset>`` model.path
    output_dir: str = "runs/debate_judge"
    overwrite_output_dir: bool = False


def draw_subset(n_units: int, game: JudgeGameConfig, rng: random.Random) -> list[int]:
    """A random evidence subset, sorted: ``min(L, N)`` units (``exact``) or a size uniform in 0..N (``up_to``)."""
    size = min(game.length, n_units) if game.subset == "exact" else rng.randint(0, n_units)
    return sorted(rng.sample(range(n_units), size))


class SubsetCollator:
    """Batches of (gold, foil) pairs behind one fresh random evidence subset per row, in the layout of TRL's
    ``DataCollatorForPreference`` (chosen rows first). Rows carry ``problem``, an index into ``problems``."""

    def __init__(self, problems: list[Problem], tokenizer: Any, game: JudgeGameConfig, max_length: int | None,
                 truncation_side: str, seed: int):
        from trl.trainer.reward_trainer import DataCollatorForPreference

        self.problems, self.tokenizer, self.game = problems, tokenizer, game
        self.max_length, self.truncation_side = max_length, truncation_side
        self.rng = random.Random(f"alignrl-debate-judge/{seed}")
        self.inner = DataCollatorForPreference(pad_token_id=tokenizer.pad_token_id)

    def pair(self, problem: Problem, revealed: list[int]) -> dict[str, list[int]]:
        from alignrl.reward_model.pairs import encode

        texts = {key: judge_input(problem.units, revealed, answer, self.game.slot_width, self.game.view)
                 for key, answer in (("chosen_ids", problem.gold), ("rejected_ids", problem.foil))}
        return {key: encode(self.tokenizer, prompt, text, self.max_length, self.truncation_side).input_ids
                for key, (prompt, text) in texts.items()}

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        rows = []
        for example in examples:
            problem = self.problems[int(example["problem"])]
            rows.append(self.pair(problem, draw_subset(len(problem.units), self.game, self.rng)))
        return self.inner(rows)


def build_tiny_init(spec: str, folder: Path, seed: int, overrides: dict[str, Any] | None = None) -> str:
    """``tiny:<preset>``: the quickstart's character tokenizer and a fresh tiny Llama (``overrides``: LlamaConfig
    fields) saved into ``folder``."""
    from alignrl.quickstart.tiny_model import PRESETS, build_model, build_tokenizer

    preset = spec[len(TINY_PREFIX):] or "quickstart"
    if preset not in PRESETS:
        raise ValueError(f"model.path '{spec}': unknown tiny preset '{preset}'; known: {', '.join(PRESETS)}")
    tokenizer = build_tokenizer()
    build_model(tokenizer, preset, seed=seed, **(overrides or {})).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return str(folder)


def judge_accuracy(judge: Any, problems: list[Problem], revealed: list[list[int]]) -> dict[str, float]:
    """Share of problems where J(e, gold) > J(e, foil) (ties half), with the given evidence per problem."""
    units = [p.units for p in problems]
    gold = judge.score(units, revealed, [p.gold for p in problems])
    foil = judge.score(units, revealed, [p.foil for p in problems])
    margin = gold - foil
    return {"accuracy": float(((margin > 0).float() + 0.5 * (margin == 0).float()).mean()),
            "mean_margin": float(margin.mean()), "problems": len(problems)}


def evaluate_judge(judge: Any, problems: list[Problem], length: int, seed: int) -> dict[str, Any]:
    """Held-out accuracy with full evidence, with one random L-subset per problem, and with no evidence."""
    rng = random.Random(f"alignrl-debate-judge-eval/{seed}")
    n = [len(p.units) for p in problems]
    subsets = [sorted(rng.sample(range(k), min(length, k))) for k in n]
    return {"full": judge_accuracy(judge, problems, [list(range(k)) for k in n]),
            "random_L": judge_accuracy(judge, problems, subsets),
            "none": judge_accuracy(judge, problems, [[] for _ in n])}


def write_score_pairs(path: Path, problems: list[Problem], game: JudgeGameConfig, seed: int) -> None:
    """Held-out pairs behind random L-unit evidence as ``{prompt, chosen, rejected, kind}`` rows for ``alignrl
    score`` (the ``columns`` view has no separate prompt: each answer's text holds the evidence)."""
    rng = random.Random(f"alignrl-debate-judge-eval/{seed}")
    with path.open("w", encoding="utf-8") as f:
        for p in problems:
            revealed = sorted(rng.sample(range(len(p.units)), min(game.length, len(p.units))))
            prompt, chosen = judge_input(p.units, revealed, p.gold, game.slot_width, game.view)
            _, rejected = judge_input(p.units, revealed, p.foil, game.slot_width, game.view)
            row = {"prompt": prompt} if prompt is not None else {}
            f.write(json.dumps({**row, "chosen": chosen, "rejected": rejected, "kind": p.kind}) + "\n")


def train_judge(config: JudgeRunConfig, resume: bool = False, command: str = "") -> dict[str, Any]:
    """Train, save the judge folder with its description and held-out figures; returns the figures."""
    import datasets
    from trl import RewardTrainer

    from alignrl.debate.judge import Judge
    from alignrl.learner.models import load_tokenizer
    from alignrl.reward_model.train import (build_reward_config, load_sequence_classifier, metrics_file_callback,
                                            peft_config, save_final_model)
    from alignrl.reward_model.train_cli import claim_output_dir

    spec = config.data.spec()
    out = Path(config.output_dir)
    lora = peft_config(config.model.lora)
    resume_from = claim_output_dir(out, resume, config.overwrite_output_dir)
    if config.model.path.startswith(TINY_PREFIX):
        init = out / "init"
        if not (init / "config.json").is_file():
            init.mkdir(parents=True, exist_ok=True)
            build_tiny_init(config.model.path, init, config.rm.seed, config.tiny)
        config.model.path = str(init)
    tokenizer = load_tokenizer(config.model)  # type: ignore[arg-type]
    train = make_problems(config.data.train_problems, config.data.seed, "train", spec)
    test = make_problems(config.data.test_problems, config.data.seed, "heldout", spec)
    collator = SubsetCollator(train, tokenizer, config.judge, config.rm.max_length, config.rm.truncation_side,
                              config.rm.seed)
    # rows are problem indices; chosen_ids/rejected_ids only mark the dataset as processed for RewardTrainer (the
    # collator encodes every pair afresh behind a new evidence subset)
    marker = [[tokenizer.eos_token_id]] * len(train)
    dataset = datasets.Dataset.from_dict({"chosen_ids": marker, "rejected_ids": marker,
                                          "problem": list(range(len(train)))})
    datasets.disable_progress_bars()
    model = load_sequence_classifier(config.model, tokenizer)
    trainer = RewardTrainer(model=model, args=build_reward_config(out, config.rm, False), train_dataset=dataset,
                            processing_class=tokenizer, peft_config=lora, data_collator=collator,
                            callbacks=[metrics_file_callback(out / "metrics.jsonl")])
    started = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    final = save_final_model(trainer, out, config.model.lora is not None)
    info = JudgeInfo(slot_width=config.judge.slot_width, length=config.judge.length, view=config.judge.view,
                     domain=asdict(spec))
    figures: dict[str, Any] = {"train_problems": len(train), "steps": trainer.state.global_step,
                               "train_seconds": time.time() - started}
    judge = Judge(final, tokenizer, slot_width=config.judge.slot_width,
                  batch_size=config.rm.per_device_eval_batch_size, view=config.judge.view)
    figures["heldout"] = evaluate_judge(judge, test, config.judge.length, config.data.seed)
    if trainer.is_world_process_zero():
        info.write(out)
        write_score_pairs(out / "heldout_pairs.jsonl", test, config.judge, config.data.seed)
        settings = {"model": asdict(config.model), "data": asdict(config.data), "judge": asdict(config.judge),
                    "rm": asdict(config.rm)}
        (out / "judge_config.json").write_text(json.dumps(settings, indent=2, default=str) + "\n")
        (out / "eval.json").write_text(json.dumps(figures, indent=2) + "\n")
        (out / "README.md").write_text(_card(settings, figures, command), encoding="utf-8")
    trainer.accelerator.wait_for_everyone()
    return figures


def _card(settings: dict[str, Any], figures: dict[str, Any], command: str) -> str:
    held = figures["heldout"]
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification",
             "tags: [reward-model, bradley-terry, debate, alignrl, trl]", "---", "", "# Debate judge", "",
             "A one-output sequence classifier that scores an answer from revealed evidence only, trained with "
             "TRL's `RewardTrainer` (loss -log σ(J(e, gold) - J(e, foil))) on fresh random evidence subsets by "
             f"`alignrl debate judge`. Input: `alignrl.debate.judge.judge_input` (view "
             f"`{settings['judge']['view']}`, slot width {settings['judge']['slot_width']}).", "",
             "| held-out evidence | accuracy | mean margin |", "|---|---|---|"]
    lines += [f"| {k} | {v['accuracy']:.1%} | {v['mean_margin']:.3f} |" for k, v in held.items()]
    lines += ["", f"{held['full']['problems']} held-out problems; `heldout_pairs.jsonl` holds them behind random "
              f"L-unit evidence for `alignrl score`. {figures['steps']} optimiser steps, "
              f"{figures['train_seconds']:.0f} s.", ""]
    lines += ["## Settings", "", "```json", json.dumps(settings, indent=2, default=str), "```", ""]
    if command:
        lines += ["## Command", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def load_judge_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> JudgeRunConfig:
    """A judge recipe (``reward_models/debate_*.yaml``) plus dotted overrides; errors name the file and key."""
    from alignrl.config.loader import apply_override, read_yaml
    from alignrl.config.typed import build_dataclass

    data = read_yaml(path)
    for override in overrides:
        apply_override(data, override)
    return build_dataclass(JudgeRunConfig, data, "", str(path) + (" (with overrides)" if overrides else ""))
