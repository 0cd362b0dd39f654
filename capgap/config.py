"""Typed configs from YAML, validated on load.

A config is a (nested) dataclass. :func:`load` reads YAML, rejects unknown or mistyped keys
with an error naming the key and the file (with a did-you-mean hint), applies
``key.sub=value`` overrides from the command line, and returns the dataclass. :func:`dump`
writes the fully resolved config a run used, so it can be re-run verbatim.
"""

from __future__ import annotations

import contextvars
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from capgap.errors import CapgapError
from capgap.io import write_text

T = TypeVar("T")
_RULES = contextvars.ContextVar("capgap_config_rules", default=True)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


class RawText(str):
    """A ``--set key=value`` value as typed: parsed as YAML only where the field is not a
    string, so ``--set student="runs/my run #2"`` or a folder named ``on`` stay strings."""


def _coerce_raw(text: RawText, tp: Any, where: str) -> Any:
    parsed = _yaml_scalar(str(text))
    args = get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)
    if parsed is None and type(None) in args:
        return None
    if str not in args:
        return _coerce(parsed, tp, where)
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "'\""
    if isinstance(parsed, str):
        return parsed if quoted else str(text)
    try:
        return _coerce(parsed, tp, where)  # e.g. int | str: 67000000 is a number, 3B a string
    except CapgapError:
        return str(text)


def _yaml_scalar(raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        return raw


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Check ``value`` against the annotation ``tp``; return it (ints widen to floats)."""
    if isinstance(value, RawText):
        return _coerce_raw(value, tp, where)
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except CapgapError as e:
                errors.append(str(e))
        raise CapgapError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    if origin is typing.Literal:
        if value not in get_args(tp):
            choices = ", ".join(repr(a) for a in get_args(tp))
            raise CapgapError(f"{where}: must be one of {choices}, got {value!r}")
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise CapgapError(f"{where}: expected a list, got {value!r}")
        (item_tp, *_) = get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise CapgapError(f"{where}: expected a mapping, got {value!r}")
        _, val_tp = get_args(tp) or (Any, Any)
        return {k: _coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise CapgapError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if tp in (int, float) and isinstance(value, str):
        value = _number(value)  # YAML 1.1 reads 2e6 (no dot) as a string
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CapgapError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise CapgapError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise CapgapError(f"{where}: expected true or false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise CapgapError(f"{where}: expected a string, got {value!r}")
        return str(value)
    if isinstance(tp, type) and not isinstance(value, tp):
        raise CapgapError(f"{where}: expected {_type_name(tp)}, got {value!r}")
    return value


def _number(text: str) -> Any:
    """``text`` as a number when it spells one (``2e6``, ``3e-4``), else unchanged."""
    try:
        return float(text)
    except ValueError:
        return text


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``, rejecting unknown keys by name."""
    hints = get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(names)})"
            raise CapgapError(f"{where}: unknown key '{key}'{hint}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    data = {k: _with_defaults(fields[k], v) for k, v in data.items()}
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as e:
        raise CapgapError(f"{where}: {e}") from None
    validate = getattr(obj, "validate", None)
    if callable(validate) and _RULES.get():
        validate()
    return obj


def checked(obj: T) -> T:
    """A config built in Python, validated as a YAML file would be (types, choices and every
    section's ``validate``); the API's entry points call it so no path skips the checks."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise CapgapError(f"expected a config object, got {type(obj).__name__}")
    return from_dict(type(obj), to_dict(obj), where=type(obj).__name__)


def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: nested mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _with_defaults(f: dataclasses.Field, value: Any) -> Any:
    """A partial section is laid over the field's *own* default, not its class's defaults.

    ``train: {micro_batch_size: 8}`` must keep the other values the enclosing config chose
    for ``train`` (e.g. pretraining's lr 1e-3), not reset them to ``TrainConfig()``'s.
    """
    if not isinstance(value, dict) or f.default_factory is dataclasses.MISSING:
        return value
    default = f.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return merge_dicts(to_dict(default), value)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise CapgapError(f"override '{text}' must look like key.sub=value")
    key, raw = text.split("=", 1)
    return key.strip().split("."), RawText(raw)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings onto a nested dict (as :class:`RawText`, parsed by type)."""
    for text in overrides:
        path, value = _parse_override(text)
        _set(data, path, value, f"override '{text}'")
    return data


def apply_values(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set ``{"a.b": value}`` onto a nested dict as they are: a command-line flag's string
    stays a string (``--student "runs/my run #2"``, a folder named ``on``), never YAML."""
    for key, value in values.items():
        if value is not None:
            _set(data, key.split("."), value, f"'{key}'")
    return data


def _set(data: dict[str, Any], path: list[str], value: Any, what: str) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise CapgapError(f"{what}: '{part}' is not a section")
    node[path[-1]] = value


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise CapgapError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise CapgapError(f"{path}: not valid YAML{at}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CapgapError(f"{path}: expected a mapping at the top level")
    return data


def load(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None,
         values: dict[str, Any] | None = None, rules: bool = True) -> T:
    """Load and validate config ``cls`` from YAML ``path`` (optional), then typed ``values``
    (``{"a.b": value}``, e.g. from flags), then ``key=value`` override strings (which win).
    ``rules=False`` checks keys and types only, not each section's ``validate`` (so an
    incomplete config can still be printed as a template)."""
    data = read_yaml(path) if path is not None else {}
    data = apply_values(data, dict(values or {}))
    data = apply_overrides(data, list(overrides or []))
    token = _RULES.set(rules)
    try:
        return from_dict(cls, data, where=str(path) if path is not None else "config")
    finally:
        _RULES.reset(token)


def to_dict(obj: Any) -> Any:
    """A plain, YAML-safe dict of a config dataclass."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def dumps(obj: Any) -> str:
    """The fully resolved config as YAML text (the form :func:`load` reads back)."""
    return yaml.safe_dump(to_dict(obj), sort_keys=False)


def dump(obj: Any, path: str | Path) -> None:
    """Atomically write the fully resolved config as YAML."""
    write_text(path, dumps(obj))
