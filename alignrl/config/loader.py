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
    """Fail early, by key, on local paths the run will use that do not exist (hub names are checked when loaded).

    ``config`` is any config with ``model.path``/``model.reference`` and ``data.train``; ``data.eval`` is checked
    only when evaluation runs (``eval.every_steps > 0``), and so are the reward kwargs that name a model
    (``path``, ``model``, ``*_model``, ``*model_path``) of every term that runs.
    """
    models = [("model.path", config.model.path), ("model.reference", config.model.reference)]
    for index, term in enumerate(getattr(getattr(config, "reward", None), "functions", None) or []):
        models += [(f"reward.functions[{index}].kwargs.{name}", value) for name, value in term.kwargs.items()
                   if term.weight != 0 and isinstance(value, str) and _names_a_path(name)]
    for key, value in models:
        if value and _looks_local(value) and not Path(value).expanduser().exists():
            raise ConfigError(source, key, f"model folder not found: {value}")
    evaluation = getattr(config, "eval", None)
    data_eval = getattr(config.data, "eval", None)
    if evaluation is not None and evaluation.every_steps > 0 and not data_eval:
        raise ConfigError(source, "data.eval", f"eval.every_steps is {evaluation.every_steps} but no held-out "
                                               f"prompt file is set: set data.eval, or eval.every_steps=0")
    uses_eval = evaluation is None or evaluation.every_steps > 0
    for key, value in (("data.train", config.data.train), ("data.eval", data_eval if uses_eval else None)):
        if value and (_looks_local(value) or value.endswith(DATA_SUFFIXES)) and not Path(value).expanduser().exists():
            raise ConfigError(source, key, f"data file not found: {value}")


def _names_a_path(kwarg: str) -> bool:
    return kwarg in ("path", "model") or kwarg.endswith(("_model", "model_path"))


def _looks_local(value: str) -> bool:
    """A local path rather than a hub name: absolute, relative with ./ or ../, ~, existing, or inside a folder that
    exists here (``runs/rm_quickstart`` when ``runs/`` exists; a hub name's organisation is not a local folder)."""
    parts = Path(value).parts
    return (value.startswith(("/", "./", "../", "~")) or Path(value).exists()
            or (len(parts) > 1 and Path(parts[0]).is_dir()))


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
