"""Bradley-Terry reward models with TRL's ``RewardTrainer``: a scalar sequence-classification head on a causal LM.

``train_reward_model(config)`` encodes the preference pairs with :func:`alignrl.reward_model.pairs.encode` (the
same encoding ``alignrl score`` and the ``bt_rm`` reward use, so a model is scored on exactly the text it was
trained on), hands them to ``RewardTrainer`` as a processed dataset (``chosen_ids``/``rejected_ids``, plus
``margin`` when the data has one: the loss is then ``-log σ(r_c - r_r - margin)``), trains full weights or LoRA
adapters, and writes into ``output_dir``:

- the final model at the top: a Hugging Face folder that loads with ``AutoModelForSequenceClassification`` (LoRA
  adapters are merged into it; the adapters alone are kept in ``adapter/``), with the tokenizer;
- ``README.md``, a model card with the data, the settings and the held-out accuracy;
- ``metrics.jsonl`` (every logged step: loss, accuracy, margin, lr, grad norm), ``eval.json`` (held-out figures);
- ``checkpoint-<step>/`` folders (Trainer checkpoints: model, optimiser, scheduler, RNG), resumed with ``--resume``.

Inputs longer than ``max_length`` are truncated from ``truncation_side`` (left by default: the head reads the
last token, so the end of the response is kept) and counted, never dropped (TRL itself would drop them).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch


@dataclass
class RMParams:
    """Training knobs; each maps onto a ``trl.RewardConfig`` / ``TrainingArguments`` field."""

    learning_rate: float = 1e-5
    max_steps: int = -1  # optimiser steps; -1 = train for num_train_epochs
    num_train_epochs: float = 1.0
    per_device_train_batch_size: int = 8  # pairs per process per micro-batch
    per_device_eval_batch_size: int = 32
    gradient_accumulation_steps: int = 1
    warmup_steps: float = 0.0  # an int is steps, a float in [0, 1) a share of the total
    lr_scheduler_type: str = "linear"
    weight_decay: float = 0.0
    adam_beta2: float = 0.999
    max_grad_norm: float = 1.0
    max_length: int | None = 1024  # tokens per prompt+response; None = the model's context
    truncation_side: Literal["left", "right"] = "left"
    center_rewards_coefficient: float | None = None  # TRL's auxiliary loss pulling mean rewards to 0 (e.g. 0.01)
    seed: int = 0
    logging_steps: int = 10
    eval_steps: int = 0  # held-out loss/accuracy every N steps (0 = only at the end)
    save_steps: int = 500  # checkpoint every N steps (0 = none until the end)
    save_total_limit: int = 2
    bf16: bool | None = None  # None = only where a GPU supports it
    report_to: list[str] = field(default_factory=list)
    progress_bar: bool = True
    extra_args: dict[str, Any] = field(default_factory=dict)  # further RewardConfig fields, passed through

    def __post_init__(self) -> None:
        if self.truncation_side not in ("left", "right"):
            raise ValueError(f"rm.truncation_side must be 'left' or 'right', got {self.truncation_side!r}")
        if self.max_length is not None and self.max_length < 2:
            raise ValueError("rm.max_length must be at least 2 (or null)")


@dataclass
class RMLoraConfig:
    """LoRA adapters (peft, task SEQ_CLS: the score head trains fully)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] | str = "all-linear"
    layers_to_transform: list[int] | None = None  # e.g. the last layers only: a shorter backward pass (peft then
    # needs target_modules as a list of module names, not "all-linear")


@dataclass
class RMModelConfig:
    path: str  # causal LM (or sequence-classification) folder or hub name to put the head on
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    lora: RMLoraConfig | None = None
    trust_remote_code: bool = False
    attn_implementation: str | None = None


@dataclass
class RMDataConfig:
    train: str  # JSON/JSONL/Parquet file or hub dataset of preference pairs
    test: str | None = None  # held-out pairs; None = hold out ``test_share`` of ``train``
    split: str = "train"
    test_split: str = "test"  # split of a hub dataset named in ``test``
    test_share: float = 0.0
    prompt_field: str | None = "prompt"  # None or a missing column: implicit prompt (inside chosen/rejected)
    chosen_field: str = "chosen"
    rejected_field: str = "rejected"
    margin_field: str | None = None  # a column of required margins (loss -log σ(r_c - r_r - m))
    max_train_pairs: int | None = None


@dataclass
class RMRunConfig:
    model: RMModelConfig
    data: RMDataConfig
    rm: RMParams = field(default_factory=RMParams)
    output_dir: str = "runs/reward_model"
    overwrite_output_dir: bool = False


@dataclass
class EncodedSplit:
    """Encoded pairs of one split and what happened on the way."""

    rows: list[Any]  # PreferenceRow
    chosen_ids: list[list[int]]
    rejected_ids: list[list[int]]
    truncated: int
    empty: int

    def dataset(self, with_margin: bool) -> Any:
        from datasets import Dataset

        columns: dict[str, list] = {"chosen_ids": self.chosen_ids, "rejected_ids": self.rejected_ids}
        if with_margin:
            columns["margin"] = [float(r.margin or 0.0) for r in self.rows]
        return Dataset.from_dict(columns)


def encode_pairs(rows: list[dict[str, Any]], source: str, data: RMDataConfig, tokenizer: Any,
                 max_length: int | None, truncation_side: str) -> EncodedSplit:
    """Parse (errors name the row and field) and encode every pair with the shared encoding."""
    from alignrl.reward_model.pairs import encode, parse_preference_rows

    parsed, _ = parse_preference_rows(rows, source, prompt_field=data.prompt_field or "prompt",
                                      chosen_field=data.chosen_field, rejected_field=data.rejected_field,
                                      margin_field=data.margin_field)
    if data.margin_field and any(r.margin is None for r in parsed):
        bad = next(r for r in parsed if r.margin is None)
        raise ValueError(f"{source}, row {bad.index}: no number in margin column '{data.margin_field}'")
    chosen, rejected, truncated, empty = [], [], 0, 0
    for row in parsed:
        pair = [encode(tokenizer, row.prompt, response, max_length, truncation_side)
                for response in (row.chosen, row.rejected)]
        chosen.append(pair[0].input_ids)
        rejected.append(pair[1].input_ids)
        truncated += sum(e.truncated for e in pair)
        empty += sum(e.empty for e in pair)
    return EncodedSplit(parsed, chosen, rejected, truncated, empty)


def load_sequence_classifier(config: RMModelConfig, tokenizer: Any) -> Any:
    """A one-output sequence-classification model on ``config.path`` (a fresh, seeded head on a causal LM)."""
    from transformers import AutoModelForSequenceClassification

    from alignrl.learner.models import ModelLoadError
    from alignrl.rollout.base import resolve_dtype

    kwargs: dict[str, Any] = {"num_labels": 1, "dtype": resolve_dtype(config.dtype),
                              "trust_remote_code": config.trust_remote_code}
    if config.attn_implementation:
        kwargs["attn_implementation"] = config.attn_implementation
    try:
        from trl.trainer.reward_trainer import suppress_seqcls_warning

        with suppress_seqcls_warning():
            model = AutoModelForSequenceClassification.from_pretrained(config.path, **kwargs)
    except (OSError, ValueError) as err:
        raise ModelLoadError(f"model.path '{config.path}': cannot load it as a sequence classifier: {err}") from err
    model.config.pad_token_id = tokenizer.pad_token_id
    return model


def peft_config(lora: RMLoraConfig | None) -> Any:
    if lora is None:
        return None
    from peft import LoraConfig

    from alignrl.config import ConfigError

    try:
        return LoraConfig(task_type="SEQ_CLS", r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                          target_modules=lora.target_modules, layers_to_transform=lora.layers_to_transform)
    except ValueError as err:
        raise ConfigError("recipe", "model.lora", str(err)) from err


def build_reward_config(output_dir: Path, params: RMParams, has_eval: bool) -> Any:
    """The ``trl.RewardConfig`` for ``params``."""
    from trl import RewardConfig

    on_gpu = torch.cuda.is_available()
    bf16 = (on_gpu and torch.cuda.is_bf16_supported()) if params.bf16 is None else params.bf16
    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir), learning_rate=params.learning_rate, max_steps=params.max_steps,
        num_train_epochs=params.num_train_epochs, per_device_train_batch_size=params.per_device_train_batch_size,
        per_device_eval_batch_size=params.per_device_eval_batch_size,
        gradient_accumulation_steps=params.gradient_accumulation_steps, warmup_steps=params.warmup_steps,
        lr_scheduler_type=params.lr_scheduler_type, weight_decay=params.weight_decay, adam_beta2=params.adam_beta2,
        max_grad_norm=params.max_grad_norm, max_length=None,  # truncated by our encoding, never dropped
        center_rewards_coefficient=params.center_rewards_coefficient, seed=params.seed, data_seed=params.seed,
        logging_steps=params.logging_steps, logging_first_step=True, bf16=bf16, fp16=False,
        report_to=list(params.report_to) or "none", disable_tqdm=not params.progress_bar,
        eval_strategy="steps" if (has_eval and params.eval_steps > 0) else "no",
        eval_steps=params.eval_steps or None,
        save_strategy="steps" if params.save_steps > 0 else "no", save_steps=params.save_steps or 500,
        save_total_limit=params.save_total_limit, dataloader_num_workers=0, dataloader_pin_memory=on_gpu,
        remove_unused_columns=False,
    )
    checkpointing_flag = ("activation_checkpointing" if "activation_checkpointing" in RewardConfig.__dataclass_fields__
                          else "gradient_checkpointing")
    if not {"activation_checkpointing", "gradient_checkpointing"} & set(params.extra_args):
        kwargs[checkpointing_flag] = False
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not on_gpu:
        kwargs["ddp_backend"] = "gloo"
    kwargs.update(params.extra_args)
    return RewardConfig(**kwargs)


def pair_metrics(margins: torch.Tensor) -> dict[str, float]:
    """The figures ``alignrl score`` reports for the same margins: accuracy (a tie counts as wrong, as in TRL) with
    its 95% Wilson interval, accuracy with ties as half, ties, mean margin and the ECE of sigmoid(margin)."""
    from alignrl.reward_model.score_metrics import accuracy_block, expected_calibration_error

    values = [float(m) for m in margins]
    if not values:
        return {"pairs": 0}
    block = accuracy_block(values)
    low, high = block["accuracy_ci95"]
    return {"pairs": block["n"], "accuracy": block["accuracy"], "accuracy_low": low, "accuracy_high": high,
            "accuracy_ties_as_half": block["accuracy_ties_as_half"], "mean_margin": block["mean_margin"],
            "ties": block["ties"], "ece": expected_calibration_error(values)}


def score_split(model: Any, tokenizer: Any, split: EncodedSplit, batch_size: int) -> torch.Tensor:
    """Margins r(chosen) - r(rejected) of every pair, with the shared batched scorer."""
    from alignrl.reward_model.scorer import SequenceScorer

    scorer = SequenceScorer(model, tokenizer, batch_size=batch_size, max_length=None, truncation_side="left")
    scores = scorer.score_ids(split.chosen_ids + split.rejected_ids).float().cpu()
    n = len(split.chosen_ids)
    return scores[:n] - scores[n:]


def metrics_file_callback(path: Path) -> Any:
    """A ``TrainerCallback`` appending every log line to ``path`` (``metrics.jsonl``; rank 0)."""
    from transformers import TrainerCallback

    class MetricsFile(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if state.is_world_process_zero and logs:
                with path.open("a", encoding="utf-8") as f:
                    f.write(json.dumps({"step": state.global_step, "time": time.time(), **logs}) + "\n")

    return MetricsFile()


def last_checkpoint(output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None


def run_settings(config: RMRunConfig) -> dict[str, Any]:
    return {"model": asdict(config.model), "data": asdict(config.data), "rm": asdict(config.rm)}


def train_reward_model(config: RMRunConfig, resume: bool = False, command: str = "") -> dict[str, Any]:
    """Train, save the final folder, the card and ``eval.json``; returns the held-out figures."""
    from trl import RewardTrainer

    from alignrl.data import DataError
    from alignrl.reward_model.pairs import load_table as load_rows
    from alignrl.reward_model.model_card import write_model_card
    from alignrl.reward_model.train_cli import claim_output_dir

    out = Path(config.output_dir)
    lora = peft_config(config.model.lora)  # a bad LoRA setting fails before the folder is claimed
    resume_from = claim_output_dir(out, resume, config.overwrite_output_dir)
    from alignrl.learner.models import load_tokenizer

    tokenizer = load_tokenizer(config.model)  # type: ignore[arg-type]  (path / trust_remote_code)
    max_length = config.rm.max_length
    rows = load_rows(config.data.train, config.data.split)
    if not rows:
        raise DataError(f"{config.data.train}: no preference pairs")
    if config.data.test:
        test_rows, test_source = load_rows(config.data.test, config.data.test_split), config.data.test
    elif config.data.test_share > 0:
        import random

        order = list(range(len(rows)))
        random.Random(config.rm.seed).shuffle(order)
        n_test = max(1, round(len(rows) * config.data.test_share))
        test_rows = [rows[i] for i in order[:n_test]]
        rows, test_source = [rows[i] for i in order[n_test:]], f"{config.data.train} (held-out share)"
    else:
        test_rows, test_source = [], ""
    if config.data.max_train_pairs is not None:
        rows = rows[:config.data.max_train_pairs]
    train_split = encode_pairs(rows, config.data.train, config.data, tokenizer, max_length, config.rm.truncation_side)
    test_split = (encode_pairs(test_rows, test_source, config.data, tokenizer, max_length, config.rm.truncation_side)
                  if test_rows else None)
    with_margin = config.data.margin_field is not None
    model = load_sequence_classifier(config.model, tokenizer)
    import datasets

    datasets.disable_progress_bars()
    trainer = RewardTrainer(
        model=model, args=build_reward_config(out, config.rm, test_split is not None),
        train_dataset=train_split.dataset(with_margin),
        eval_dataset=test_split.dataset(with_margin) if test_split is not None else None,
        processing_class=tokenizer, peft_config=lora,
        callbacks=[metrics_file_callback(out / "metrics.jsonl")],
    )
    started = time.time()
    trainer.train(resume_from_checkpoint=resume_from)
    final = save_final_model(trainer, out, config.model.lora is not None)
    figures: dict[str, Any] = {"train_pairs": len(train_split.rows), "train_truncated_texts": train_split.truncated,
                               "train_empty_texts": train_split.empty, "train_seconds": time.time() - started,
                               "steps": trainer.state.global_step}
    if test_split is not None:
        margins = score_split(final, tokenizer, test_split, config.rm.per_device_eval_batch_size)
        figures.update({f"test_{k}": v for k, v in pair_metrics(margins).items()},
                       test_truncated_texts=test_split.truncated, test_empty_texts=test_split.empty,
                       test_source=test_source)
    if trainer.is_world_process_zero():
        (out / "eval.json").write_text(json.dumps(figures, indent=2) + "\n")
        (out / "rm_config.json").write_text(json.dumps(run_settings(config), indent=2, default=str) + "\n")
        write_model_card(out, run_settings(config), figures, command)
    trainer.accelerator.wait_for_everyone()
    return figures


def save_final_model(trainer: Any, out: Path, lora: bool) -> Any:
    """Save the final model at the top of ``out`` (merged when LoRA) and return it, in eval mode."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if lora:
        if trainer.is_world_process_zero():
            model.save_pretrained(str(out / "adapter"))
        model = model.merge_and_unload()
    if trainer.is_world_process_zero():
        model.save_pretrained(str(out), safe_serialization=True)
        trainer.processing_class.save_pretrained(str(out))
        trainer.save_state()
    trainer.accelerator.wait_for_everyone()
    return model.eval()
