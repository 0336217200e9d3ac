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


def decode_utf8(raw: bytes, source: str | Path) -> str:
    """``raw`` as UTF-8 text; an invalid byte is a DataError naming the file, the line and the column."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        column = err.start - (raw.rfind(b"\n", 0, err.start) + 1) + 1
        raise DataError(f"{source}, line {line}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {column}); "
                        f"save the file as UTF-8") from None


def utf8_lines(raw_lines: Iterable[bytes], source: str | Path) -> Iterator[str]:
    """Decode each line of a file opened in binary mode, naming the file and line of an invalid byte."""
    for number, raw in enumerate(raw_lines, 1):
        try:
            yield raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{source}, line {number}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                            f"{err.start + 1}); save the file as UTF-8") from None


def lone_surrogate(value: Any) -> tuple[str, int] | None:
    """The first string in ``value`` (a string, list or dict of them) that UTF-8 cannot encode, and the position
    of its bad character (a lone UTF-16 surrogate such as ``"\\ud800"``, which JSON allows), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            return value, err.start
        return None
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else ()
    return next((found for item in items if (found := lone_surrogate(item)) is not None), None)


def load_rows(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a JSON/JSONL/Parquet/CSV file, or of a hub dataset ``source`` (its ``split``)."""
    path = Path(source).expanduser()
    if path.suffix == ".jsonl":
        if not path.is_file():
            raise DataError(f"{source}: data file not found")
        rows = []
        with path.open("rb") as handle:
            for number, row in parse_jsonl(utf8_lines(handle, source), source):
                if not isinstance(row, dict):
                    raise DataError(f"{source}, line {number}: expected a JSON object, got {type(row).__name__}")
                rows.append(row)
        return rows
    if path.suffix == ".json":
        if not path.is_file():
            raise DataError(f"{source}: data file not found")
        try:
            data = json.loads(decode_utf8(path.read_bytes(), source))
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
        if kind == "csv":
            decode_utf8(path.read_bytes(), source)  # an invalid byte named by line, not a pyarrow traceback
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
        for key in filter(None, (config.prompt_field, config.answer_field)):
            if (bad := lone_surrogate(row[key])) is not None:
                raise DataError(f"{source}, row {index}: '{key}' holds a lone UTF-16 surrogate "
                                f"({bad[0][bad[1]]!r} at character {bad[1]}), which is not text a tokenizer can "
                                f"encode; fix or drop the row")
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
