"""The ``capgap`` command: one subcommand per pipeline stage, thin over the Python API.

Each stage lives in ``capgap/cli/<stage>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``. This file only wires them together and
turns :class:`~capgap.errors.CapgapError` into a one-line message and exit status 2.

Building the parser imports every stage module, so they import the stage's API (torch,
transformers, scipy: seconds) inside ``run()``, never at their top: ``capgap --help`` stays
well under a second.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from capgap import __version__
from capgap.cli.common import ConfigPrinted
from capgap.errors import CapgapError

# Order is the pipeline order shown by ``capgap --help``.
STAGES: list[str] = [
    "pilot",
    "data",
    "pretrain",
    "convert",
    "eval",
    "prune",
    "distill",
    "sweep",
    "study",
    "law",
    "report",
    "recipe",
    "plan",
    "presets",
    "archs",
]


def _load_stage(name: str):  # noqa: ANN202 - a module
    try:
        return importlib.import_module(f"capgap.cli.{name}")
    except ModuleNotFoundError as e:
        if e.name == f"capgap.cli.{name}":
            return None
        raise


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="capgap",
        description="Find the best teacher for a student size and run the whole job: "
        "pretrain, prune, distill, evaluate, sweep, fit the capacity-gap law.",
    )

    parser.add_argument("--version", action="version", version=f"capgap {__version__}")
    sub = parser.add_subparsers(dest="stage", metavar="STAGE")
    for name in STAGES:
        module = _load_stage(name)
        if module is None:
            continue
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def _quiet_libraries() -> None:
    """capgap draws its own progress bars; silence transformers' load reports and bars."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``capgap`` console script."""
    _quiet_libraries()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "_run", None) is None:
        parser.print_help()
        return 0

    try:
        return int(args._run(args) or 0)
    except ConfigPrinted:
        return 0
    except CapgapError as e:
        print(f"capgap {args.stage}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"capgap {args.stage}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`, which closed early: not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:  # an unexpected bug: one line by default, traceback on request
        if os.environ.get("CAPGAP_DEBUG"):
            raise
        print(
            f"capgap {args.stage}: internal error: {type(e).__name__}: {e} "
            "(set CAPGAP_DEBUG=1 for a traceback)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
