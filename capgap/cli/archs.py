"""``capgap archs``: the architecture families capgap supports, from the one registry."""

from __future__ import annotations

import argparse
import json

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = "list the architecture families capgap prunes, distills and plans (the registry)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="one JSON object per family")


def run(args: argparse.Namespace) -> int:
    from capgap.models.arch import FAMILIES, supported_table

    if args.json:
        for a in FAMILIES:
            print(json.dumps({"family": a.name, "title": a.title, "model_types": list(a.model_types),
                              "shape_rule": a.shape_rule, "notes": a.notes,
                              "attn_implementation": a.attn_implementation}))
    else:
        print(supported_table())
    return 0
