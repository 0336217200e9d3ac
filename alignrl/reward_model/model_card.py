"""The model card (``README.md``) of a trained reward model: data, settings, held-out accuracy, command."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


def render_model_card(settings: dict[str, Any], figures: dict[str, Any], command: str) -> str:
    """Markdown with a Hugging Face metadata header."""
    model, data, rm = settings["model"], settings["data"], settings["rm"]
    lines = ["---", "library_name: transformers", "pipeline_tag: text-classification",
             "tags: [reward-model, bradley-terry, alignrl, trl]", "---", "",
             "# Bradley-Terry reward model", "",
             f"A scalar sequence-classification head on `{model['path']}`, trained with TRL's `RewardTrainer` "
             f"(loss -log σ(r_chosen - r_rejected{' - margin' if data.get('margin_field') else ''})) by "
             f"`alignrl rm train`. Load it with `AutoModelForSequenceClassification.from_pretrained(<this folder>)`; "
             f"score files with `alignrl score --model <this folder> --data FILE --out DIR`.", ""]
    if "test_accuracy" in figures:
        lines += ["## Held-out accuracy", "",
                  f"**{figures['test_accuracy']:.1%}** of {figures['test_pairs']} held-out pairs "
                  f"(95% Wilson interval {figures['test_accuracy_low']:.1%}-{figures['test_accuracy_high']:.1%}; "
                  f"{figures['test_ties']} ties, counted wrong), mean margin {figures['test_mean_margin']:.3f}, "
                  f"expected calibration error of sigmoid(margin) {figures['test_ece']:.3f}, on "
                  f"`{figures.get('test_source')}` (the figures `alignrl score` reports for the same pairs).",
                  ""]
    else:
        lines += ["## Held-out accuracy", "", "No held-out pairs were given (`data.test` / `data.test_share`).", ""]
    lines += ["## Data", "", "| key | value |", "|---|---|"]
    lines += [f"| data.{k} | {_fmt(v)} |" for k, v in data.items() if v is not None]
    lines += [f"| train pairs | {figures.get('train_pairs')} |",
              f"| texts truncated (train / test) | {figures.get('train_truncated_texts')} / "
              f"{figures.get('test_truncated_texts', '-')} |",
              f"| empty texts (train / test) | {figures.get('train_empty_texts')} / "
              f"{figures.get('test_empty_texts', '-')} |", "",
              "## Settings", "", "| key | value |", "|---|---|"]
    lines += [f"| model.{k} | {_fmt(v)} |" for k, v in model.items() if v is not None]
    lines += [f"| rm.{k} | {_fmt(v)} |" for k, v in rm.items() if v not in (None, {}, [])]
    lines += [f"| optimiser steps | {figures.get('steps')} |",
              f"| training seconds | {figures.get('train_seconds', 0):.0f} |", ""]
    if command:
        lines += ["## Command", "", "```bash", command, "```", ""]
    return "\n".join(lines)


def write_model_card(out: Path, settings: dict[str, Any], figures: dict[str, Any], command: str) -> Path:
    path = out / "README.md"
    path.write_text(render_model_card(settings, figures, command), encoding="utf-8")
    return path
