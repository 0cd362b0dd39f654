"""Typed configs from YAML, validated on load by pydantic.

A config is a (nested) stdlib dataclass: that is the Python API (``SweepConfig(...)``).
:func:`load` reads YAML, lays command-line flags and ``key.sub=value`` overrides on it, and
has pydantic check the mapping against the dataclass: an unknown key is an error naming the
key, the file and a did-you-mean, a wrong type names its dotted path; then every section's
``validate()`` runs. :func:`checked` gives a config built in Python the same checks.
:func:`dump` writes the fully resolved config a run used, so it can be re-run verbatim;
:func:`describe` lists every key with its type, default and docstring (``--help-config``);
:func:`preset` loads a shipped preset (``capgap/configs/<stage>/<name>.yaml``).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import operator
import re
import types
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError
from pydantic_core import CoreConfig, SchemaValidator
from pydantic_core import core_schema as cs

from capgap.errors import CapgapError
from capgap.io import write_text

T = TypeVar("T")

STAGE_CONFIGS = {
    "pretrain": "capgap.train.pretrain:PretrainConfig",
    "distill": "capgap.distill.engine:DistillConfig",
    "sweep": "capgap.sweep.config:SweepConfig",
    "study": "capgap.study.runner:StudyConfig",
    "recipe": "capgap.recipe.minima:MinimaConfig",
}
"""The config class of each folder of presets (``capgap/configs/<stage>``), by name so this
module imports no stage (``capgap pilot`` reads the sweep's)."""

# Unknown keys are errors; a number where a string is expected becomes that string (a teacher
# named 125000000); attribute docstrings become field descriptions (read by ``describe``).
_PYDANTIC = ConfigDict(extra="forbid", coerce_numbers_to_str=True, use_attribute_docstrings=True)
_CORE = CoreConfig(extra_fields_behavior="forbid", coerce_numbers_to_str=True)


# -- validation ----------------------------------------------------------------------------

def _spelled_number(value: Any) -> Any:
    """A number written as text (YAML 1.1 reads ``2e6``, without a dot, as a string) or a
    whole float (``2e6`` once read) as the number; anything else unchanged, for the strict
    check to refuse (a bool is not a number here, nor ``'many'``)."""
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _strict_scalars(node: Any) -> Any:
    """pydantic's schema with ints, floats and bools strict (no ``true`` for a count, no
    ``1`` or ``'yes'`` for a switch), numbers read from text first (:func:`_spelled_number`).
    Mappings still build dataclasses, lists accept tuples, numbers become strings."""
    if isinstance(node, (list, tuple)):
        return type(node)(_strict_scalars(n) for n in node)
    if not isinstance(node, dict):
        return node
    node = {k: _strict_scalars(v) for k, v in node.items()}
    if node.get("type") == "bool":
        return {**node, "strict": True}
    if node.get("type") in ("int", "float"):
        return cs.no_info_before_validator_function(_spelled_number, {**node, "strict": True})
    return node


@functools.cache
def _adapter(tp: Any) -> TypeAdapter:
    return TypeAdapter(list[tp], config=_PYDANTIC)  # a list: config may not wrap a dataclass


@functools.cache
def _validator(tp: Any) -> SchemaValidator:
    """Checks ``[value]`` against annotation ``tp`` (a config class or a field's type)."""
    return SchemaValidator(_strict_scalars(_adapter(tp).core_schema), _CORE)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """The init fields of dataclass ``cls`` and their (resolved) annotations."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _members(tp: Any) -> tuple[Any, ...]:
    return get_args(tp) if get_origin(tp) in (Union, types.UnionType) else (tp,)


def _section(tp: Any) -> type | None:
    """The dataclass a mapping builds at a field of type ``tp`` (``X`` or ``X | None``)."""
    found = [m for m in _members(tp) if dataclasses.is_dataclass(m)]
    return found[0] if len(found) == 1 else None


def _on_defaults(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """A partial section laid over the field's *own* default, not its class's defaults.

    ``train: {micro_batch_size: 8}`` must keep the other values the enclosing config chose
    for ``train`` (e.g. pretraining's lr 1e-3), not reset them to ``TrainConfig()``'s.
    """
    out = dict(data)
    for f in dataclasses.fields(cls):
        value = out.get(f.name)
        if not f.init or not isinstance(value, dict):
            continue
        if f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
            if dataclasses.is_dataclass(default):
                value = merge_dicts(to_dict(default), value)
        section = _section(_hints(cls)[f.name])
        out[f.name] = _on_defaults(section, value) if section else value
    return out


def _run_rules(obj: Any) -> None:
    """Every section's ``validate()``, innermost first (a section's rule may rely on its
    subsections being sound)."""
    if isinstance(obj, (list, tuple)):
        for v in obj:
            _run_rules(v)
    elif isinstance(obj, dict):
        for v in obj.values():
            _run_rules(v)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _run_rules(getattr(obj, f.name))
        validate = getattr(obj, "validate", None)
        if callable(validate):
            validate()


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config", rules: bool = True) -> T:
    """Build dataclass ``cls`` from ``data`` (errors name their place, prefixed ``where``),
    then run every section's ``validate()`` unless ``rules`` is False."""
    if not isinstance(data, dict):
        raise CapgapError(f"{where}: expected a mapping, got {data!r}")
    try:
        (obj,) = _validator(cls).validate_python([_on_defaults(cls, data)])
    except ValidationError as e:
        errors = e.errors()  # an unknown key first: a misspelt key also leaves one missing
        first = next((x for x in errors if x["type"] in _UNKNOWN), errors[0])
        raise CapgapError(_describe_error(first, cls, data, where)) from None
    if rules:
        _run_rules(obj)
    return obj


_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false",
             "string": "a string", "list": "a list", "tuple": "a list", "dict": "a mapping",
             "dataclass": "a mapping"}


def _describe_error(error: dict[str, Any], cls: type, data: Any, where: str) -> str:
    """One line for pydantic's first error: its dotted path, what was expected, what came."""
    loc, tp, value, path = list(error["loc"][1:]), cls, data, where
    while loc:
        if _section(tp):
            tp = _section(tp)
        elif len([m for m in _members(tp) if m is not type(None)]) > 1:
            return f"{path}: expected {type_name(tp)}, got {value!r}"  # e.g. int | str
        key = loc.pop(0)
        if dataclasses.is_dataclass(tp):
            names = list(_hints(tp))
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"known: {', '.join(names)}"
                return f"{path}: unknown key '{key}' ({hint})"
            tp, path = _hints(tp)[key], f"{path}.{key}"
        elif get_origin(tp) in (list, tuple) and isinstance(key, int):
            tp, path = (get_args(tp) or (Any,))[0], f"{path}[{key}]"
        elif get_origin(tp) is dict:
            tp, path = (get_args(tp) or (Any, Any))[-1], f"{path}.{key}"
        else:
            break
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            value = error["input"]
    tp = _members(tp)[0] if _members(tp)[1:] == (type(None),) else tp  # X | None: X
    kind = error["type"]
    if kind == "missing_argument":
        return f"{path}: missing (required)"
    if get_origin(tp) is Literal:
        choices = ", ".join(repr(a) for a in get_args(tp))
        return f"{path}: must be one of {choices}, got {error['input']!r}"
    expected = _EXPECTED.get(kind.split("_")[0])
    if expected:
        return f"{path}: expected {expected}, got {error['input']!r}"
    return f"{path}: {error['msg'][:1].lower()}{error['msg'][1:]}, got {error['input']!r}"


def checked(obj: T) -> T:
    """A config built in Python, validated as a YAML file would be (types, choices and every
    section's ``validate``); the API's entry points call it so no path skips the checks."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise CapgapError(f"expected a config object, got {type(obj).__name__}")
    return from_dict(type(obj), to_dict(obj), where=type(obj).__name__)


# -- files, flags and overrides ------------------------------------------------------------

def merge_dicts(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` laid on ``base``: nested mappings merge key by key, anything else replaces."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merge_dicts(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _field_type(cls: type, path: list[str]) -> Any:
    """The annotation at dotted ``path`` of ``cls`` (Any past a free-form mapping)."""
    tp: Any = cls
    for part in path:
        section = _section(tp)
        if section:
            tp = _hints(section).get(part, Any)
        elif get_origin(tp) is dict:
            tp = (get_args(tp) or (Any, Any))[-1]
        else:
            return Any
    return tp


def _typed_text(raw: str, tp: Any) -> Any:
    """A ``--set`` value as typed: read as YAML (``tokens=2e6``, ``sizes=[T0, T1]``,
    ``teacher=null``) unless the field takes a string, where the text stays as written
    (``student="runs/my run #2"``, a folder named ``on``), quotes removed. A field taking a
    string or something else (``int | str``) gets the other where the YAML value fits it."""
    try:
        parsed = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        parsed = raw
    members = _members(tp)
    if str not in members or parsed is None and type(None) in members:
        return parsed
    if len(raw) >= 2 and raw[0] == raw[-1] and raw[0] in "'\"" and isinstance(parsed, str):
        return parsed
    others = [m for m in members if m not in (str, type(None))]
    if isinstance(parsed, str) or not others:
        return raw
    try:
        (value,) = _validator(functools.reduce(operator.or_, others)).validate_python([parsed])
        return value  # int | str: 67000000 is a number, 3B a string
    except ValidationError:
        return raw


def _set(data: dict[str, Any], path: list[str], value: Any, what: str) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise CapgapError(f"{what}: '{part}' is not a section")
    node[path[-1]] = value


def apply_overrides(cls: type, data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` strings onto a nested dict, each read as its field's type."""
    for text in overrides:
        if "=" not in text:
            raise CapgapError(f"override '{text}' must look like key.sub=value")
        key, raw = text.split("=", 1)
        path = key.strip().split(".")
        _set(data, path, _typed_text(raw, _field_type(cls, path)), f"override '{text}'")
    return data


def apply_values(data: dict[str, Any], values: dict[str, Any]) -> dict[str, Any]:
    """Set ``{"a.b": value}`` onto a nested dict as they are: a command-line flag's string
    stays a string (``--student "runs/my run #2"``, a folder named ``on``), never YAML."""
    for key, value in values.items():
        if value is not None:
            _set(data, key.split("."), value, f"'{key}'")
    return data


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
    data = apply_overrides(cls, data, list(overrides or []))
    return from_dict(cls, data, where=str(path) if path is not None else "config", rules=rules)


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


# -- what a config holds: keys, types, defaults, docs ----------------------------------------

@dataclass(frozen=True)
class FieldDoc:
    """One config key as ``--help-config`` lists it."""

    key: str
    """Dotted (``train.optim.lr``); ``[]`` stands for any item of a list."""
    type: str
    default: str
    """As YAML would write it; ``required`` where there is none, empty for a section (its
    keys follow it)."""
    doc: str
    """The first sentence of the field's docstring (empty where it has none)."""


def type_name(tp: Any) -> str:
    """An annotation as a reader writes it: ``int | None``, ``list[str]``, ``ddp|fsdp``."""
    if get_origin(tp) is Literal:
        return "|".join(str(a) for a in get_args(tp))
    if get_origin(tp) in (Union, types.UnionType):
        return " | ".join(type_name(a) for a in get_args(tp))
    if tp is type(None):
        return "None"
    if get_origin(tp) is not None:
        return f"{get_origin(tp).__name__}[{', '.join(type_name(a) for a in get_args(tp))}]"
    return getattr(tp, "__name__", str(tp).replace("typing.", ""))


def _collect_docs(node: Any, out: dict[type, dict[str, str]]) -> None:
    """Field descriptions pydantic read from attribute docstrings, per dataclass."""
    if isinstance(node, (list, tuple)):
        for n in node:
            _collect_docs(n, out)
    elif isinstance(node, dict):
        if node.get("type") == "dataclass":
            out.setdefault(node["cls"], {
                f["name"]: f.get("metadata", {}).get("pydantic_js_updates", {}).get("description", "")
                for f in node["schema"]["fields"]})
        for v in node.values():
            _collect_docs(v, out)


@functools.cache
def _docs(cls: type) -> dict[type, dict[str, str]]:
    out: dict[type, dict[str, str]] = {}
    _collect_docs(_adapter(cls).core_schema, out)
    return out


def _first_sentence(text: str) -> str:
    """A docstring's first sentence, its reST markup (``x``, :func:`x`) made plain."""
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", " ".join(text.split())).replace("``", "")
    return re.split(r"(?<!e\.g\.)(?<!i\.e\.)(?<=[.!?])\s+(?=[A-Z(])", text, maxsplit=1)[0]


def _inline(value: Any) -> str:
    """A default as YAML writes it on one line (``null``, ``[0]``, ``0.0003``)."""
    if isinstance(value, float):
        return repr(value)
    text = yaml.safe_dump(to_dict(value), default_flow_style=True, width=10**6).strip()
    return text.removesuffix("...").strip()


def describe(cls: type) -> list[FieldDoc]:
    """Every key of config ``cls``, sections first and then their keys, each with its type,
    its default (the enclosing config's: pretraining's ``train.optim.lr`` is its own) and
    its docstring's first sentence. A section that defaults to null (``teachers.pretrain``)
    lists its keys with its class's defaults."""
    docs = _docs(cls)
    rows: list[FieldDoc] = []

    def walk(section: type, obj: Any, prefix: str) -> None:
        for f in dataclasses.fields(section):
            if not f.init:
                continue
            tp, key = _hints(section)[f.name], prefix + f.name
            value = getattr(obj, f.name) if obj is not None else dataclasses.MISSING
            default = ("required" if value is dataclasses.MISSING
                       else "" if dataclasses.is_dataclass(value) else _inline(value))
            sub = _section(tp)
            doc = docs.get(section, {}).get(f.name, "") or _class_doc(sub)
            rows.append(FieldDoc(key, type_name(tp), default, _first_sentence(doc)))
            items = get_args(tp)[0] if get_origin(tp) is list and get_args(tp) else None
            if sub:
                walk(sub, value if isinstance(value, sub) else _default_of(sub), key + ".")
            elif dataclasses.is_dataclass(items):
                walk(items, _default_of(items), key + "[].")

    walk(cls, _default_of(cls), "")
    return rows


def _class_doc(cls: type | None) -> str:
    """A section's class docstring (not the signature dataclass writes where it has none)."""
    if cls is None or (cls.__doc__ or "").startswith(f"{cls.__name__}("):
        return ""
    return cls.__doc__ or ""


def _default_of(cls: type) -> Any:
    """``cls()``, or None where a field has no default."""
    try:
        return cls()
    except TypeError:
        return None


# -- presets ------------------------------------------------------------------------------

def config_class(stage: str) -> type:
    """The config class of ``stage`` (a key of :data:`STAGE_CONFIGS`)."""
    if stage not in STAGE_CONFIGS:
        raise CapgapError(f"no stage {stage!r} takes a config; stages: {', '.join(STAGE_CONFIGS)}")
    module, name = STAGE_CONFIGS[stage].split(":")
    return getattr(importlib.import_module(module), name)


def _preset_root(stage: str) -> Any:
    return resources.files("capgap") / "configs" / stage


def preset_names(stage: str) -> list[str]:
    """The shipped presets of ``stage``, sorted."""
    root = _preset_root(stage)
    if not root.is_dir():
        return []
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_path(stage: str, name: str) -> Path:
    path = Path(str(_preset_root(stage) / f"{name}.yaml"))
    if not path.is_file():
        raise CapgapError(f"no {stage} preset {name!r}; presets: {', '.join(preset_names(stage))}")
    return path


def preset_summary(stage: str, name: str) -> str:
    """The first comment line of a preset: what it is for."""
    for line in preset_path(stage, name).read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            return line.lstrip("#").strip()
        if line.strip():
            break
    return ""


def preset(stage: str, name: str, overrides: list[str] | None = None, rules: bool = True) -> Any:
    """A shipped preset as its typed config, e.g. ``preset("sweep", "ladder")`` is a
    :class:`~capgap.sweep.SweepConfig`; ``overrides`` as ``--set`` takes them. The distill
    and recipe presets name no models: give them (``overrides=["student=DIR"]``) or
    ``rules=False`` for the template."""
    return load(config_class(stage), preset_path(stage, name), overrides, rules=rules)
