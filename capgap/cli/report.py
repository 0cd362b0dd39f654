"""capgap report: the HTML report and summary table of a sweep folder."""

from __future__ import annotations

import argparse
from pathlib import Path

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = "write DIR/report/index.html for a sweep (loss-vs-teacher curves, law, tables)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("sweep_dir", type=Path, help="a sweep folder (holds results.sqlite)")


def run(args: argparse.Namespace) -> int:
    from capgap.report import build_report, summary_table

    print(summary_table(args.sweep_dir))
    path = build_report(args.sweep_dir)
    print(f"report: {path}")
    return 0
