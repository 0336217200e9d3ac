"""Turn plain dicts (from YAML) into typed dataclasses, with errors that name the file, the key and what was expected.

Supported field types: bool, int, float, str, Any, Optional[X], X | None, list[X], tuple[X, ...], dict[str, X],
Literal[...], nested dataclasses, and dataclasses with a ``from_mapping`` classmethod (for sections whose schema
depends on a value, like ``algorithm.name``).
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints


class ConfigError(ValueError):
    """A recipe or override that does not fit the schema. The message names the source, the key and the problem."""

    def __init__(self, source: str, key: str, problem: str):
        self.source, self.key, self.problem = source, key, problem
        where = f"{source}: " if source else ""
        super().__init__(f"{where}key '{key}': {problem}" if key else f"{where}{problem}")


def _type_name(tp: Any) -> str:
    origin = get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in get_args(tp))
    if origin in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if origin in (list, tuple):
        return f"a list of {_type_name(get_args(tp)[0])}"
    if origin is dict:
        return "a mapping"
    return getattr(tp, "__name__", str(tp))


def convert(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against type ``tp`` and convert it (int -> float, list -> tuple, dict -> dataclass)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        specific = None  # a mapping that fails inside a dataclass: that error says more than "expected X or Y"
        for arg in args:
            if arg is type(None):
                continue
            try:
                return convert(value, arg, key, source)
            except ConfigError as err:
                if specific is None and isinstance(value, dict) and dataclasses.is_dataclass(arg):
                    specific = err
        if specific is not None:
            raise specific
        raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value in get_args(tp):
            return value
        raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")
        builder = getattr(tp, "from_mapping", None)
        if builder is not None:
            return builder(value, key=key, source=source)
        return build_dataclass(tp, value, key, source)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"expected {_type_name(tp)}, got {value!r}")
        item_tp = get_args(tp)[0] if get_args(tp) else Any
        items = [convert(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {value!r}")
        val_tp = get_args(tp)[1] if get_args(tp) else Any
        return {str(k): convert(v, val_tp, f"{key}.{k}", source) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(source, key, f"expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(source, key, f"expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-6" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(source, key, f"expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(source, key, f"expected a string, got {value!r}")
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def build_dataclass(cls: type, data: dict, key: str = "", source: str = "") -> Any:
    """Build dataclass ``cls`` from ``data``; unknown keys, wrong types and missing required keys are errors."""
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    prefix = f"{key}." if key else ""
    unknown = [k for k in data if k not in fields]
    if unknown:
        known = ", ".join(sorted(fields))
        raise ConfigError(source, prefix + str(unknown[0]), f"unknown key; '{key or 'top level'}' accepts: {known}")
    kwargs = {}
    for name, field in fields.items():
        if name in data:
            kwargs[name] = convert(data[name], hints[name], prefix + name, source)
        elif field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING:
            raise ConfigError(source, prefix + name, f"required key is missing (expected {_type_name(hints[name])})")
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(source, key, str(err)) from err


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict (for writing the resolved config)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        to_mapping = getattr(obj, "to_mapping", None)
        if to_mapping is not None:
            return to_mapping()
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


__all__ = ["ConfigError", "build_dataclass", "convert", "to_dict"]
