"""capgap pilot: the main job on the embedded default — teachers, sweep, law, report."""

from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from capgap.cli.common import add_config_flags, load_stage_config
from capgap.cli.sweep import add_sweep_flags, describe_summary
from capgap.report.text import table
from capgap.results.accounting import teacher_rows

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = ("the main job: pretrain the default micro family, sweep teacher x student, fit the "
        "law, write the report (re-running resumes; --preset large goes further)")


ANSWER = "answer.json"  # which regime the pilot ran and what its answer rests on


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, "sweep")
    add_sweep_flags(p)
    p.add_argument("--out", type=Path, default=Path("runs/pilot"),
                   help="output folder (default: runs/pilot); re-running resumes it")
    p.add_argument("--overwrite", action="store_true",
                   help="delete --out and start again from scratch")


def run(args: argparse.Namespace) -> int:
    from capgap.io import write_json
    from capgap.report import build_report, summary_table
    from capgap.report.tables import TEACHER_COLUMNS
    from capgap.results.regime import describe_answer, describe_regime, read_regime, regime_lines
    from capgap.results.store import sweep_law
    from capgap.sweep import run_sweep

    cfg = load_stage_config("sweep", args, default_preset="pilot")
    if args.no_progress:  # also silences the training bars of teachers and worker processes
        os.environ["CAPGAP_NO_PROGRESS"] = "1"
    if args.overwrite and args.out.exists():
        shutil.rmtree(args.out)
    summary = run_sweep(cfg, args.out, workers=args.workers, backend=args.backend,
                        progress=not args.no_progress)
    print(summary_table(args.out))
    teachers = teacher_rows(args.out)
    if teachers:
        print("teachers (micro models, far from converged: see tok/param):")
        print(table(teachers, TEACHER_COLUMNS))
    print(describe_summary(summary))
    regime, answer = describe_regime(read_regime(args.out)), describe_answer(sweep_law(args.out))
    print("\n".join(regime_lines(regime, answer)))
    write_json(args.out / ANSWER, {"regime": regime, "answer": answer})
    print(f"report: {build_report(args.out)}")
    return 0 if summary.failed == 0 else 1
