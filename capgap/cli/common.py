"""Flags and helpers shared by the stage commands (so every stage behaves the same)."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

from capgap import config as cfgmod
from capgap.errors import CapgapError

T = TypeVar("T")


def add_run_flags(p: argparse.ArgumentParser, out_required: bool = True) -> None:
    """--out / --resume / --overwrite with the shared run-folder semantics."""
    p.add_argument("--out", required=out_required, type=Path, help="output run folder")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true",
                   help="continue an unfinished run in --out from its last checkpoint")
    g.add_argument("--overwrite", action="store_true",
                   help="discard whatever run --out holds and start again")


def add_config_flags(p: argparse.ArgumentParser, stage: str) -> None:
    """--config FILE / --preset NAME / --set key=value."""
    names = ", ".join(preset_names(stage)) or "none"
    p.add_argument("--config", type=Path, help="YAML config file (validated on load)")
    p.add_argument("--preset", help=f"a shipped config ({names})")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.tokens=2e6 (repeatable)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file, preset, flags and --set applied) "
                   "as YAML and exit without running")


class ConfigPrinted(Exception):  # noqa: N818 - a control-flow signal, not an error
    """--print-config did its job: the command stops here with status 0."""


def preset_names(stage: str) -> list[str]:
    root = resources.files("capgap") / "configs" / stage
    if not root.is_dir():
        return []
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def preset_path(stage: str, name: str) -> Path:
    path = Path(str(resources.files("capgap") / "configs" / stage / f"{name}.yaml"))
    if not path.is_file():
        raise CapgapError(f"no {stage} preset {name!r}; presets: {', '.join(preset_names(stage))}")
    return path


def load_stage_config(cls: type[T], stage: str, args: argparse.Namespace,
                      default_preset: str | None = None,
                      flags: dict[str, Any] | None = None) -> T:
    """The stage's config from --config or --preset (or the default preset), then the
    stage's own ``flags`` (``{"a.b": value}``, None for a flag not given; set as typed
    values, never re-parsed), then --set (which wins)."""
    if args.config and args.preset:
        raise CapgapError("give either --config or --preset, not both")
    path = args.config or (preset_path(stage, args.preset or default_preset)
                           if (args.preset or default_preset) else None)
    printing = getattr(args, "print_config", False)
    cfg = cfgmod.load(cls, path, args.overrides, values=flags, rules=not printing)
    if printing:
        sys.stdout.write(cfgmod.dumps(cfg))
        raise ConfigPrinted
    return cfg


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
