"""A config to and from plain dicts and YAML files, strictly: unknown keys and wrong types raise."""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any

from facecls.atomic import write_text
from facecls.config import ConfigError, RunConfig
from facecls.config_rules import validate


def to_dict(config: Any) -> dict[str, Any]:
    """A plain, YAML-safe dict of a config dataclass (nested dataclasses become dicts)."""
    return dataclasses.asdict(config)


def given_settings(config: RunConfig) -> dict[str, Any]:
    """The settings a config sets away from the dataclass defaults, before any recipe fills it:
    what the user chose (``{"train.epochs": 3, ...}``), the run's name and folder aside."""
    default = to_dict(RunConfig())
    out = {}
    for section, body in to_dict(config).items():
        if isinstance(body, dict):
            out.update({f"{section}.{k}": v for k, v in body.items() if v != default[section][k]})
    return out


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check ``value`` against a field annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        concrete = [o for o in options if o is not type(None)]
        if len(concrete) == 1:  # Optional[X]: report X's own error
            return _coerce(value, concrete[0], where)
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: {value!r} is not a valid {annotation}")
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return _from_dict(annotation, value, where)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is float and isinstance(value, float) and not math.isfinite(value):
        # every comparison with NaN is false: a range check would let it through
        raise ConfigError(f"{where}: must be a finite number, got {value!r}")
    if annotation in (int, float, str, bool):
        # bool is a subclass of int: refuse True where an int is expected.
        if isinstance(value, bool) != (annotation is bool) or not isinstance(value, annotation):
            raise ConfigError(f"{where}: expected {annotation.__name__}, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported annotation {annotation}")


def _from_dict(cls: type, values: dict[str, Any], where: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"{where or 'the top level'}: unknown key(s) {unknown}; known: {sorted(names)}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    return cls(**kwargs)


def from_dict(values: dict[str, Any]) -> RunConfig:
    """Build a validated :class:`RunConfig` from a (possibly partial) nested dict.

    Raises:
        ConfigError: on unknown keys, wrong types or out-of-range values.
    """
    return validate(_from_dict(RunConfig, values, ""))


def replace(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Return a copy with fields of sections replaced, e.g. ``replace(c, train={"epochs": 3})``."""
    merged = to_dict(config)
    for section, values in sections.items():
        if isinstance(values, dict):
            merged.setdefault(section, {}).update(values)
        else:
            merged[section] = values
    return from_dict(merged)


def save_yaml(config: RunConfig, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    import yaml  # here, not at the top: ``facecls --help`` starts faster without it

    write_text(path, yaml.safe_dump(to_dict(config), sort_keys=False))


def load_yaml(path: Path) -> RunConfig:
    """Read a config written by :func:`save_yaml` (``yaml.safe_load``: no objects are built)."""
    import yaml  # here, not at the top: ``facecls --help`` starts faster without it

    try:
        values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as error:
        raise ConfigError(f"{path}: cannot read this config ({error.strerror or error})") from error
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a YAML text file (not UTF-8)") from error
    except yaml.YAMLError as error:  # a python/object tag is refused here too (safe_load)
        mark = getattr(error, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark is not None else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}{where}: not valid YAML ({problem})") from error
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    try:
        return from_dict(values)
    except ConfigError as error:  # name the file the key or value is in
        raise ConfigError(f"{path}: {error}") from error
