"""capgap sweep: the teacher × student grid, thin over :func:`capgap.sweep.run_sweep`."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

from capgap.cli.common import add_config_flags, load_stage_config, print_json

if TYPE_CHECKING:
    from capgap.sweep import SweepSummary

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = "run the teacher x student sweep (prune, distil, baseline, evaluate; re-run resumes)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, "sweep")
    add_sweep_flags(p)
    p.add_argument("--out", help="sweep folder (re-running the same command "
                   "skips finished cells and redoes broken ones)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def add_sweep_flags(p: argparse.ArgumentParser) -> None:
    """--workers / --backend, shared with ``capgap pilot``. No --resume: re-running a sweep
    resumes it (finished cells are skipped, interrupted ones continue from a checkpoint)."""
    p.add_argument("--workers", type=int, default=None,
                   help="cells (and teachers) trained at once; each gets cores / N torch "
                        "threads (default: the config's workers)")
    p.add_argument("--backend", choices=["local", "ray"], default="local",
                   help="local worker processes (default) or Ray tasks (pip install ray)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from capgap.report import summary_table
    from capgap.sweep import run_sweep

    cfg = load_stage_config("sweep", args, default_preset="pilot")
    if args.no_progress:  # also silences the training bars of teachers and worker processes
        os.environ["CAPGAP_NO_PROGRESS"] = "1"
    summary = run_sweep(cfg, Path(args.out), workers=args.workers, backend=args.backend,
                        progress=not args.no_progress)
    if args.json:
        print_json(summary.to_dict())
        return 0 if summary.failed == 0 else 1
    print(describe_summary(summary))
    print(summary_table(summary.out))
    return 0 if summary.failed == 0 else 1


def describe_summary(s: SweepSummary) -> str:
    """Two lines: what this invocation did, and the law it ended with."""
    law = s.law
    status = law.get("status")
    line = (f"sweep {s.out}: {s.cells} cells, {s.skipped} already done, "
            f"{s.ran} ran, {s.failed} failed in {s.seconds:.0f} s")
    if s.left_out:
        line += f"; {s.left_out} left out by the adaptive selection (adaptive.json)"
    if status == "ok":
        lawline = f"law: T* = {law['slope']:.3g}·S + {law['intercept']:.3g} (R² {law.get('r2')})"
    else:
        lawline = f"law: {status} — {law.get('reason', '')}"
    return f"{line}\n{lawline} (law.json)"
