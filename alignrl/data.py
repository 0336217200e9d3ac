"""Prompt datasets: load rows from a local file or the hub, render and tokenize prompts (samplers pick them)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import PreTrainedTokenizerBase

from alignrl.config.schema import DataConfig


class DataError(ValueError):
    """A data file or row that cannot be used; the message names the file and the row."""


def parse_jsonl(lines: Iterable[str], source: str | Path) -> Iterator[tuple[int, Any]]:
    """``(line number, value)`` for each non-blank JSON line; a line that is not JSON is a DataError naming it."""
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{source}, line {number}: not valid JSON ({err.msg})") from err


def load_rows(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a JSON/JSONL/Parquet/CSV file, or of a hub dataset ``source`` (its ``split``)."""
    path = Path(source).expanduser()
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise DataError(f"{source}: data file not found")
        rows = []
        with path.open(encoding="utf-8") as handle:
            for number, row in parse_jsonl(handle, source):
                if not isinstance(row, dict):
                    raise DataError(f"{source}, line {number}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
        return rows
    if path.suffix == ".json":
        if not path.is_file():
            raise DataError(f"{source}: data file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise DataError(f"{source}: not valid JSON ({err.msg} at line {err.lineno})") from err
        data = data.get(split, data.get("data", data)) if isinstance(data, dict) else data
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise DataError(f"{source}: expected a list of JSON objects (or {{'{split}': [...]}})")
        return data
    import datasets  # heavy import, only for the formats that need it

    if path.suffix in (".parquet", ".csv", ".arrow"):
        if not path.is_file():
            raise DataError(f"{source}: data file not found")
        kind = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}[path.suffix]
        return list(datasets.load_dataset(kind, data_files=str(path), split="train"))
    return list(datasets.load_dataset(source, split=split))


def render_prompt(row: dict[str, Any], config: DataConfig, tokenizer: PreTrainedTokenizerBase) -> str:
    """The text the policy sees for ``row``: optional instruction, optional chat template."""
    prompt = row[config.prompt_field]
    if config.use_chat_template:
        messages = list(prompt) if isinstance(prompt, list) else [{"role": "user", "content": str(prompt)}]
        if config.instruction:
            messages[-1] = {**messages[-1], "content": f"{messages[-1]['content']}\n\n{config.instruction}"}
        if config.system_prompt:
            messages = [{"role": "system", "content": config.system_prompt}, *messages]
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    if not isinstance(prompt, str):
        raise DataError(f"'{config.prompt_field}' holds chat messages: set data.use_chat_template: true")
    return f"{prompt}\n\n{config.instruction}" if config.instruction else prompt


@dataclass
class PromptSet:
    """Rows with their rendered prompt text and token ids, checked against the context length."""

    rows: list[dict[str, Any]]
    texts: list[str]
    token_ids: list[list[int]]

    def __len__(self) -> int:
        return len(self.rows)


def prepare_prompts(source: str, split: str, config: DataConfig, tokenizer: PreTrainedTokenizerBase,
                    max_context: int | None, max_new_tokens: int) -> PromptSet:
    """Load, validate and tokenize every prompt; errors name the file, the row and the key."""
    rows = load_rows(source, split)
    if not rows:
        raise DataError(f"{source}: the dataset is empty (split '{split}')")
    texts, ids = [], []
    for index, row in enumerate(rows):
        if config.prompt_field not in row:
            raise DataError(f"{source}, row {index}: no '{config.prompt_field}' field (data.prompt_field); "
                            f"row has: {', '.join(map(str, row))}")
        if config.answer_field and config.answer_field not in row:
            raise DataError(f"{source}, row {index}: no '{config.answer_field}' field (data.answer_field; "
                            f"set it to null if the rewards need no gold answer)")
        text = render_prompt(row, config, tokenizer)
        tokens = tokenizer(text, add_special_tokens=not config.use_chat_template)["input_ids"]
        if not tokens:
            raise DataError(f"{source}, row {index}: the prompt is empty")
        if max_context is not None and len(tokens) + max_new_tokens > max_context:
            raise DataError(f"{source}, row {index}: prompt of {len(tokens)} tokens + max_new_tokens "
                            f"{max_new_tokens} exceeds the model context of {max_context} tokens")
        texts.append(text)
        ids.append(tokens)
    return PromptSet(rows, texts, ids)
