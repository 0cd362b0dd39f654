"""capgap presets: the shipped configs of every stage, each with what it is for."""

from __future__ import annotations

import argparse

from capgap import config as cfgmod
from capgap.cli.common import print_json
from capgap.errors import CapgapError

HELP = "list the shipped configs (--preset NAME) of every stage, with what each is for"

USED_BY = {"sweep": "capgap sweep, capgap pilot", "recipe": "capgap recipe minima"}
"""Commands that read a stage's presets, where not simply ``capgap <stage>``."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("stage", nargs="?", choices=list(cfgmod.STAGE_CONFIGS),
                   help="only this stage's presets")
    p.add_argument("--json", action="store_true", help="print {stage: {name: summary}} as JSON")


def run(args: argparse.Namespace) -> int:
    stages = [args.stage] if args.stage else list(cfgmod.STAGE_CONFIGS)
    found = {s: {n: cfgmod.preset_summary(s, n) for n in cfgmod.preset_names(s)} for s in stages}
    if not any(found.values()):
        raise CapgapError(f"no presets shipped for {', '.join(stages)}")
    if args.json:
        print_json(found)
        return 0
    for stage, presets in found.items():
        if not presets:
            continue
        width = max(len(n) for n in presets)
        print(f"{stage} (--preset NAME of {USED_BY.get(stage, f'capgap {stage}')}):")
        for name, summary in presets.items():
            print(f"  {name:<{width}}  {summary}")
    print("Python: capgap.config.preset(STAGE, NAME) gives the typed config; "
          "--help-config on a stage lists its keys.")
    return 0
