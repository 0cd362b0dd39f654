"""Flags and helpers shared by the stage commands (so every stage behaves the same)."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from pathlib import Path
from typing import Any

from capgap import config as cfgmod
from capgap.errors import CapgapError


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """--out / --resume / --overwrite with the shared run-folder semantics (--out is checked
    by :func:`load_stage_config`, so --print-config and --help-config need none)."""
    p.add_argument("--out", type=Path, help="output run folder (required to run)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true",
                   help="continue an unfinished run in --out from its last checkpoint")
    g.add_argument("--overwrite", action="store_true",
                   help="discard whatever run --out holds and start again")


def add_config_flags(p: argparse.ArgumentParser, stage: str) -> None:
    """--config FILE / --preset NAME / --set key=value / --print-config / --help-config, for
    the config of ``stage`` (a key of :data:`capgap.config.STAGE_CONFIGS`)."""
    names = ", ".join(cfgmod.preset_names(stage)) or "none"
    p.add_argument("--config", type=Path, help="YAML config file (validated on load)")
    p.add_argument("--preset", help=f"a shipped config ({names}; capgap presets lists them)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config key, e.g. --set train.tokens=2e6 (repeatable)")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved config (file, preset, flags and --set applied) "
                   "as YAML and exit without running")
    p.add_argument("--help-config", action=_HelpConfig, stage=stage,
                   help="list every config key with its type, default and meaning, and exit")


class _HelpConfig(argparse.Action):
    """--help-config: the stage's config keys, generated from its dataclasses. Imports the
    stage's API (torch) only when asked, so the parser itself stays light."""

    def __init__(self, option_strings: list[str], dest: str, stage: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)
        self.stage = stage

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        sys.stdout.write(config_help(self.stage))
        parser.exit()


def config_help(stage: str) -> str:
    """Every key of ``stage``'s config: ``key (type) = default`` and its meaning below it."""
    cls = cfgmod.config_class(stage)
    lines = [f"{cls.__name__} keys: nested in a --config YAML, dotted in --set KEY=VALUE "
             "('[]': any item of a list)", ""]
    for f in cfgmod.describe(cls):
        lines.append(f"  {f.key} ({f.type})" + (f" = {f.default}" if f.default else ""))
        if f.doc:
            lines += textwrap.wrap(f.doc, width=92, initial_indent=" " * 6,
                                   subsequent_indent=" " * 6)
    return "\n".join(lines) + "\n"


class ConfigPrinted(Exception):  # noqa: N818 - a control-flow signal, not an error
    """--print-config did its job: the command stops here with status 0."""


def load_stage_config(stage: str, args: argparse.Namespace, default_preset: str | None = None,
                      flags: dict[str, Any] | None = None) -> Any:
    """The config of ``stage`` from --config or --preset (or the default preset), then the
    stage's own ``flags`` (``{"a.b": value}``, None for a flag not given; set as typed
    values, never re-parsed), then --set (which wins). With --print-config it is printed
    and the command stops; otherwise a stage with an ``--out`` flag needs it."""
    if args.config and args.preset:
        raise CapgapError("give either --config or --preset, not both")
    name = args.preset or default_preset
    path = args.config or (cfgmod.preset_path(stage, name) if name else None)
    printing = getattr(args, "print_config", False)
    cfg = cfgmod.load(cfgmod.config_class(stage), path, args.overrides, values=flags,
                      rules=not printing)
    if printing:
        sys.stdout.write(cfgmod.dumps(cfg))
        raise ConfigPrinted
    if getattr(args, "out", "") is None:
        raise CapgapError("--out is required (the run folder)")
    return cfg


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=str)
    sys.stdout.write("\n")
