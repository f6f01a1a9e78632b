"""Typed configuration machinery: dataclass schemas, YAML profiles, dotted overrides, validation.

A config is a tree of frozen dataclasses. Field types say what a value may be (`int`, `float`, `bool`, `str`,
`tuple[int, ...]`, `Literal[...]`, `X | None`, a nested dataclass); `field(metadata={"min", "max", "help"})`
gives inclusive numeric ranges and a one-line description. A field with `metadata={"sections": types}` (see
`sections_field`) holds a set of named sections whose classes come from a registry at load time (the config of
every registered baseline method): in YAML and in `to_dict` they are ordinary keys of the enclosing section.
Everything is checked before any work starts, and every error names the dotted key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from mtrl.errors import ConfigError

PROFILES_KEY = "profiles"


def sections_field(types: Callable[[], Mapping[str, type]], help: str) -> Any:
    """A field holding one section per name of `types()` (name -> config dataclass), looked up when a config is
    built, so a method registered at run time gets its section; the sections default to their classes' defaults."""
    return dataclasses.field(default_factory=lambda: {name: tp() for name, tp in types().items()},
                             metadata={"sections": types, "help": help})


def _sections(fields: Mapping[str, dataclasses.Field]) -> dict[str, tuple[str, type]]:
    """section name -> (the sections field holding it, its class), for every sections field of a class."""
    return {key: (f.name, tp) for f in fields.values() if "sections" in f.metadata
            for key, tp in f.metadata["sections"]().items()}


def build(cls: type, data: Mapping[str, Any] | None, prefix: str = "") -> Any:
    """Construct dataclass `cls` from a plain mapping, validating every key and value."""
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        raise ConfigError(f"config key '{prefix.rstrip('.') or '<root>'}' must be a mapping, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    sections = _sections(fields)
    keys = [name for name, f in fields.items() if "sections" not in f.metadata] + list(sections)
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(data) - set(keys))
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}'; valid keys{' under ' + repr(prefix[:-1]) if prefix else ''}: "
            f"{', '.join(keys)}"
        )
    values: dict[str, Any] = {name: {} for name, f in fields.items() if "sections" in f.metadata}
    for key, (holder, tp) in sections.items():
        values[holder][key] = build(tp, data.get(key), f"{prefix}{key}.")
    for name, value in data.items():
        if name in sections:
            continue
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, Mapping):
            # A nested section overrides its field's default instance, not the nested class's bare defaults.
            value = deep_merge(to_dict(_default(fields[name])), value)
        values[name] = _convert(hints[name], value, f"{prefix}{name}", fields[name])
    return cls(**values)


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"config field '{f.name}' needs a default")  # a schema bug, not a user error


def _convert(tp: Any, value: Any, key: str, f: dataclasses.Field | None = None) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if dataclasses.is_dataclass(tp):
        return build(tp, value, key + ".")
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _convert(inner, value, key, f)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"config key '{key}': {value!r} is not one of: {', '.join(map(str, args))}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}': expected a list, got {value!r}")
        item = args[0]
        items = tuple(_convert(item, v, f"{key}[{i}]") for i, v in enumerate(value))
        if item is int and any(v < 1 for v in items):  # every list of integers in the config is layer widths
            raise ConfigError(f"config key '{key}': layer widths must be >= 1, got {list(items)}")
        return items
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"config key '{key}': expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"config key '{key}': expected an integer, got {value!r}")
        return _check_range(value, key, f)
    if tp is float:
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"config key '{key}': expected a number, got {value!r}")
        if not math.isfinite(value):  # NaN passes every range check
            raise ConfigError(f"config key '{key}': expected a finite number, got {value!r}")
        return _check_range(float(value), key, f)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"config key '{key}': expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config field type {tp!r} at '{key}'")  # a schema bug, not a user error


def _check_range(value: float, key: str, f: dataclasses.Field | None) -> float:
    meta = f.metadata if f is not None else {}
    lo, hi = meta.get("min"), meta.get("max")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        bounds = " and ".join(([f">= {lo}"] if lo is not None else []) + ([f"<= {hi}"] if hi is not None else []))
        raise ConfigError(f"config key '{key}': {value!r} is out of range; allowed: {bounds}")
    return value


def to_dict(obj: Any) -> Any:
    """Dataclass tree → plain dict/list tree (tuples become lists), suitable for YAML and JSON. The sections of
    a sections field become keys of the enclosing mapping, as they are written in YAML."""
    if dataclasses.is_dataclass(obj):
        out = {}
        for f in dataclasses.fields(obj):
            value = getattr(obj, f.name)
            out |= {k: to_dict(v) for k, v in value.items()} if "sections" in f.metadata else {f.name: to_dict(value)}
        return out
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    return obj


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as {dotted key: leaf value}."""
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= flatten(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def deep_merge(base: Mapping[str, Any], overlay: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Overlay wins; mappings merge key by key, everything else is replaced. A section on one side and a
    plain value on the other (`env: 5` under a profile's `env:` mapping) is an error, not a silent replacement."""
    merged = dict(base)
    for k, v in overlay.items():
        old = merged.get(k)
        if isinstance(v, Mapping) and isinstance(old, Mapping):
            merged[k] = deep_merge(old, v, f"{prefix}{k}.")
            continue
        if old is not None and v is not None and isinstance(v, Mapping) != isinstance(old, Mapping):
            section, value = (old, v) if isinstance(old, Mapping) else (v, old)
            raise ConfigError(f"config key '{prefix}{k}': a section (keys {', '.join(map(str, section))}) in one "
                              f"place and the value {value!r} in another; a section must be a mapping everywhere")
        merged[k] = v
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """'distill.triplet_margin=2.0' → (['distill', 'triplet_margin'], 2.0); the value is parsed as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"bad --set {text!r}; expected KEY=VALUE, e.g. --set distill.triplet_margin=2.0")
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise ConfigError(f"bad --set {text!r}: value is not valid YAML ({e.problem})") from None
    return key.strip().split("."), value


def set_path(data: dict[str, Any], path: list[str], value: Any) -> dict[str, Any]:
    """Return a copy of nested dict `data` with `path` set to `value` (intermediate mappings created)."""
    overlay: Any = value
    for part in reversed(path):
        overlay = {part: overlay}
    return deep_merge(data, overlay)


def read_yaml(path: Path) -> dict[str, Any]:
    """Safe-load a YAML mapping; a missing or malformed file is a one-line ConfigError."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found; see configs/ for the shipped ones") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config file {path} is not text (not UTF-8); give a YAML file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must contain a mapping at top level")
    return data


def read_config_file(path: Path, _seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file with its `include:` files (paths relative to it) merged beneath it, recursively.

    Lets every task distribution share one set of profiles (configs/base.yaml) and override only what differs.
    """
    path = Path(path).resolve()
    if path in _seen:
        raise ConfigError(f"config file {path} includes itself (via {' -> '.join(map(str, _seen))})")
    data = read_yaml(path)
    includes = data.pop("include", [])
    if isinstance(includes, str):
        includes = [includes]
    merged: dict[str, Any] = {}
    for name in includes:
        merged = deep_merge(merged, read_config_file(path.parent / name, (*_seen, path)))
    return deep_merge(merged, data)


def select_profile(data: Mapping[str, Any], profile: str | None, source: str) -> dict[str, Any]:
    """The base mapping with the named profile deep-merged over it (profiles removed)."""
    profiles = data.get(PROFILES_KEY) or {}
    base = {k: v for k, v in data.items() if k != PROFILES_KEY}
    if profile is None:
        return base
    if profile not in profiles:
        choices = ", ".join(profiles) or "none defined"
        raise ConfigError(f"profile '{profile}' is not defined in {source}; available profiles: {choices}")
    return deep_merge(base, profiles[profile] or {})


def field_help(cls: type, defaults: Any = None) -> list[tuple[str, str, Any]]:
    """(dotted key, help, default) for every leaf field of a schema, for documentation and `--help` text.

    A nested section's defaults are those of its field's default instance (`default_factory`), which may differ
    from the nested class's own defaults (e.g. `dynamics` is an EnsembleConfig with wider layers); `defaults` is
    that instance when recursing."""
    rows: list[tuple[str, str, Any]] = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = _default(f) if defaults is None else getattr(defaults, f.name)
        if "sections" in f.metadata:
            for key, section in value.items():
                rows += [(f"{key}.{k}", h, d) for k, h, d in field_help(type(section), section)]
        elif dataclasses.is_dataclass(hints[f.name]):
            rows += [(f"{f.name}.{k}", h, d) for k, h, d in field_help(hints[f.name], value)]
        else:
            rows.append((f.name, f.metadata.get("help", ""), to_dict(value)))
    return rows
