"""Load a recipe YAML, apply ``dotted.key=value`` overrides, validate into ``RunConfig``, write it back out."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from alignrl.config.schema import RunConfig
from alignrl.config.typed import ConfigError, build_dataclass, to_dict

DATA_SUFFIXES = (".json", ".jsonl", ".parquet", ".csv", ".arrow")


def read_yaml(path: str | Path) -> dict:
    """Read a YAML mapping; a missing file or bad YAML is a ConfigError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(str(path), "", "recipe file not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(str(path), "", f"not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(str(path), "", f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_override(data: dict, override: str) -> None:
    """Set ``a.b.c=value`` in the nested dict ``data``; the value is parsed as YAML (numbers, lists, null...)."""
    source = f"command-line override '{override}'"
    key, sep, raw = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(source, "", "expected the form section.key=value")
    parts = key.strip().split(".")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(source, ".".join(parts[: i + 1]), "is not a section, cannot set a key inside it")
        node = child
    try:
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        node[parts[-1]] = raw


def check_paths(config: Any, source: str) -> None:
    """Fail early, by key, on local model/data paths that do not exist (hub names are checked when loaded).

    ``config`` is any config with ``model.path``/``model.reference`` and ``data.train`` (and maybe ``data.eval``).
    """
    for key, value in (("model.path", config.model.path), ("model.reference", config.model.reference)):
        if value and _looks_local(value) and not Path(value).expanduser().exists():
            raise ConfigError(source, key, f"model folder not found: {value}")
    for key, value in (("data.train", config.data.train), ("data.eval", getattr(config.data, "eval", None))):
        if value and (_looks_local(value) or value.endswith(DATA_SUFFIXES)) and not Path(value).expanduser().exists():
            raise ConfigError(source, key, f"data file not found: {value}")


def _looks_local(value: str) -> bool:
    return value.startswith(("/", "./", "../", "~")) or Path(value).exists()


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
                base: dict | None = None) -> RunConfig:
    """Recipe file (or ``base`` mapping) + overrides -> validated ``RunConfig``."""
    data: dict[str, Any] = read_yaml(path) if path is not None else copy.deepcopy(base or {})
    for override in overrides:
        apply_override(data, override)
    source = str(path) if path is not None else "config"
    if overrides:
        source += " (with command-line overrides)"
    config = build_dataclass(RunConfig, data, "", source)
    check_paths(config, source)
    return config


def config_to_dict(config: RunConfig) -> dict:
    return to_dict(config)


def save_config(config: RunConfig, path: str | Path) -> None:
    """Write the resolved config (every default filled in) as YAML."""
    Path(path).write_text(yaml.safe_dump(config_to_dict(config), sort_keys=False))
