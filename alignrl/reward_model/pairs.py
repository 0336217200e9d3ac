"""The preference-data contract shared by reward-model training and ``alignrl score``.

A table is a local JSON / JSONL / Parquet / CSV file or a hub dataset. A *preference* row has ``chosen`` and
``rejected``; a *response* row has ``response``. Each of those, and the optional ``prompt``, is text or a
conversation (a list of ``{"role": str, "content": str}``). When any of a row's parts is a conversation the
others are made conversations too (a text prompt becomes one user message, a text response one assistant
message), so a parsed row is either all text or all conversations. An optional numeric ``margin`` column is
kept (TRL's margin term). Every other column is kept in ``extra``.

Encoding (:func:`encode`) follows TRL's ``RewardTrainer``: text is ``prompt + response`` with the EOS token
appended when the response does not already end with it, tokenized with the tokenizer's special tokens;
conversations go through ``tokenizer.apply_chat_template(prompt + response messages)``. Inputs longer than
``max_length`` keep ``max_length`` tokens from one side (``left`` drops the start and keeps the end, the token the
reward head reads; ``right`` keeps the start). Empty responses are flagged, never dropped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

from alignrl.data import DataError, load_rows

Message = dict[str, str]
Part = str | list[Message]
TruncationSide = Literal["left", "right"]
TRUNCATION_SIDES: tuple[str, ...] = ("left", "right")


class PreferenceDataError(DataError):
    """A table or row that cannot be used; the message names the source, the row and the field."""


@dataclass
class PreferenceRow:
    """One preference pair; ``index`` is the row's 0-based position in the table."""

    index: int
    prompt: Part | None
    chosen: Part
    rejected: Part
    margin: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ResponseRow:
    """One response to score; ``index`` is the row's 0-based position in the table."""

    index: int
    prompt: Part | None
    response: Part
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class BadRow:
    """A row skipped under ``skip_bad_rows``, with why."""

    index: int
    reason: str


@dataclass
class Encoded:
    """Token ids of one scored input. ``length`` is the count before truncation."""

    input_ids: list[int]
    truncated: bool
    empty: bool
    length: int


class _RowError(Exception):
    """Internal: a row problem, turned into a BadRow or a PreferenceDataError by the caller."""


def load_table(source: str, split: str = "train") -> list[dict[str, Any]]:
    """Rows of a local ``.json`` / ``.jsonl`` / ``.parquet`` / ``.csv`` file, or of the hub dataset ``source``
    (its ``split``). Errors name the source."""
    try:
        rows = load_rows(source, split)
    except DataError:
        raise
    except Exception as err:  # datasets raises many types (not found, no network, bad split, bad file)
        raise PreferenceDataError(f"{source}: cannot load the data (split '{split}'): "
                                  f"{type(err).__name__}: {err}") from err
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise PreferenceDataError(f"{source}, row {index}: expected an object of columns, "
                                      f"got {type(row).__name__}")
    return rows


def _part(row: dict[str, Any], name: str, required: bool) -> Part | None:
    """The text or conversation in column ``name`` (None when absent and optional)."""
    if name not in row or row[name] is None:
        if required:
            present = ", ".join(map(str, row)) or "none"
            state = "is null" if name in row else "is missing"
            raise _RowError(f"field '{name}' {state} (columns: {present})")
        return None
    value = row[name]
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        messages = []
        for number, message in enumerate(value):
            if not isinstance(message, dict):
                raise _RowError(f"field '{name}': message {number} must be an object with 'role' and "
                                f"'content', got {type(message).__name__}")
            role, content = message.get("role"), message.get("content")
            if not isinstance(role, str) or not isinstance(content, str):
                raise _RowError(f"field '{name}': message {number} needs a string 'role' and a string 'content' "
                                f"(got role={role!r}, content of type {type(content).__name__})")
            messages.append({"role": role, "content": content})
        return messages
    raise _RowError(f"field '{name}' must be text or a list of {{role, content}} messages, "
                    f"got {type(value).__name__}")


def _as_conversation(part: Part | None, role: str) -> list[Message] | None:
    if part is None or isinstance(part, list):
        return part
    return [{"role": role, "content": part}]


def _unify(prompt: Part | None, responses: list[Part]) -> tuple[Part | None, list[Part]]:
    """All text, or (when any part is a conversation) all conversations."""
    if not any(isinstance(p, list) for p in (prompt, *responses)):
        return prompt, responses
    return (_as_conversation(prompt, "user"),
            [_as_conversation(r, "assistant") for r in responses])  # type: ignore[misc]


def _margin(row: dict[str, Any], name: str | None) -> float | None:
    if name is None or row.get(name) is None:
        return None
    value = row[name]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _RowError(f"field '{name}' must be a finite number, got {value!r}")
    return float(value)


def _parse(rows: list[dict[str, Any]], source: str, skip_bad_rows: bool, build) -> tuple[list, list[BadRow]]:
    parsed, bad = [], []
    for index, row in enumerate(rows):
        try:
            if not isinstance(row, dict):
                raise _RowError(f"expected an object of columns, got {type(row).__name__}")
            parsed.append(build(index, row))
        except _RowError as err:
            if not skip_bad_rows:
                raise PreferenceDataError(f"{source}, row {index}: {err} (pass --skip-bad-rows to skip such "
                                          f"rows and report them)") from None
            bad.append(BadRow(index, str(err)))
    return parsed, bad


def parse_preference_rows(rows: list[dict[str, Any]], source: str, skip_bad_rows: bool = False, *,
                          prompt_field: str = "prompt", chosen_field: str = "chosen",
                          rejected_field: str = "rejected", margin_field: str | None = "margin",
                          ) -> tuple[list[PreferenceRow], list[BadRow]]:
    """Validated preference pairs and the skipped rows. A malformed row raises :class:`PreferenceDataError`
    naming ``source``, the row and the field, unless ``skip_bad_rows``."""
    used = {prompt_field, chosen_field, rejected_field, margin_field}

    def build(index: int, row: dict[str, Any]) -> PreferenceRow:
        chosen = _part(row, chosen_field, required=True)
        rejected = _part(row, rejected_field, required=True)
        prompt, (chosen, rejected) = _unify(_part(row, prompt_field, required=False), [chosen, rejected])
        extra = {k: v for k, v in row.items() if k not in used}
        return PreferenceRow(index, prompt, chosen, rejected, _margin(row, margin_field), extra)

    return _parse(rows, source, skip_bad_rows, build)


def parse_response_rows(rows: list[dict[str, Any]], source: str, skip_bad_rows: bool = False, *,
                        prompt_field: str = "prompt", response_field: str = "response",
                        ) -> tuple[list[ResponseRow], list[BadRow]]:
    """Validated single responses and the skipped rows (errors as in :func:`parse_preference_rows`)."""
    used = {prompt_field, response_field}

    def build(index: int, row: dict[str, Any]) -> ResponseRow:
        response = _part(row, response_field, required=True)
        prompt, (response,) = _unify(_part(row, prompt_field, required=False), [response])
        return ResponseRow(index, prompt, response, {k: v for k, v in row.items() if k not in used})

    return _parse(rows, source, skip_bad_rows, build)


def is_empty(part: Part | None) -> bool:
    """True when the text, or every message's content, is blank."""
    if part is None:
        return True
    if isinstance(part, str):
        return not part.strip()
    return all(not m["content"].strip() for m in part)


def truncate(ids: list[int], max_length: int | None, side: TruncationSide) -> list[int]:
    """At most ``max_length`` ids, kept from the end (``left``: the start is dropped) or the start (``right``)."""
    if side not in TRUNCATION_SIDES:
        raise ValueError(f"truncation side must be 'left' or 'right', got {side!r}")
    if max_length is None or len(ids) <= max_length:
        return list(ids)
    return list(ids[-max_length:]) if side == "left" else list(ids[:max_length])


def token_ids(tokenizer: Any, prompt: Part | None, response: Part) -> list[int]:
    """The untruncated ids the reward model reads for ``prompt`` + ``response`` (as TRL's RewardTrainer builds them)."""
    prompt, (response,) = _unify(prompt, [response])
    if isinstance(response, list):
        messages = [*(prompt or []), *response]
        if not messages:
            return []
        encoded = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)
        return list(encoded["input_ids"])
    eos = tokenizer.eos_token
    if eos and not response.endswith(eos):
        response = response + eos
    return list(tokenizer((prompt or "") + response)["input_ids"])


def encode(tokenizer: Any, prompt: Part | None, response: Part, max_length: int | None,
           truncation_side: TruncationSide = "left") -> Encoded:
    """Token ids for scoring ``response`` after ``prompt``, truncated to ``max_length`` from ``truncation_side``.

    An input that tokenizes to nothing (an empty conversation and no prompt) is scored as the lone EOS (or pad)
    token so that it still gets a score; it is flagged ``empty`` like every blank response."""
    ids = token_ids(tokenizer, prompt, response)
    length = len(ids)
    if not ids:
        fallback = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else tokenizer.pad_token_id
        ids = [] if fallback is None else [fallback]
    kept = truncate(ids, max_length, truncation_side)
    return Encoded(input_ids=kept, truncated=len(kept) < len(ids), empty=is_empty(response), length=length)
