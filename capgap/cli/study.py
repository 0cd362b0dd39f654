"""capgap study: several sweeps sharing their teachers, thin over :func:`capgap.study.run_study`."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from capgap.cli.common import add_config_flags, load_stage_config, print_json

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = ("run a study: named sweeps (budgets, seeds, controls, architectures, objectives) "
        "sharing their teachers; re-running resumes (--preset study: the capacity-gap study)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, "study")
    p.add_argument("--out", type=Path, default=Path("runs/study"),
                   help="study folder (default: runs/study); one sweep folder per part")
    p.add_argument("--only", action="append", metavar="PART",
                   help="run only this part (repeatable); default: all, in config order")
    p.add_argument("--workers", type=int, default=None,
                   help="cells (and teachers) trained at once (default: each part's workers)")
    p.add_argument("--list", action="store_true", help="list the parts and their grids, run nothing")
    p.add_argument("--report", action="store_true",
                   help="refit and re-report the parts that have data (also while another "
                        "process runs the study), train nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", action="store_true", help="print study.json")


def run(args: argparse.Namespace) -> int:
    from capgap.law.bracket import common_text, ratio_text
    from capgap.study import report_study, run_study

    cfg = load_stage_config("study", args, default_preset="study")
    if args.no_progress:  # also silences the training bars of teachers and worker processes
        os.environ["CAPGAP_NO_PROGRESS"] = "1"
    if args.list:
        for name in cfg.parts:
            s = cfg.sweep(name)
            family = s.teachers.pretrain.family if s.teachers.pretrain else s.teachers.models
            print(f"{name}: teachers {family}; sizes {s.students.sizes}; tokens {s.tokens}; "
                  f"seeds {s.seeds}; objectives {s.objectives}; init {s.students.init}; "
                  f"allocations {s.students.allocations}"
                  + (f"; prune_from {s.students.prune_from}" if s.students.prune_from else ""))
        return 0
    if args.report:
        record = report_study(cfg, args.out)
    else:
        record = run_study(cfg, args.out, only=args.only, workers=args.workers,
                           progress=not args.no_progress)
    if args.json:
        print_json(record)
        return 0
    for name, entry in record["parts"].items():
        law = entry.get("laws", {}).get("total", {})
        if law.get("status") == "ok":
            line = ratio_text(law)
        else:
            common = common_text(law.get("bracket"))
            line = f"law {law.get('status')}" + (f", T*/S in {common}" if common else "")
        left = entry.get("left_s") or 0.0
        print(f"{name}: {entry.get('status_counts')}; {line}"
              + (f"; ~{left / 3600:.1f} worker-hours left" if left else ""))
    print(f"study: {args.out / 'study.json'}, {args.out / 'index.html'}, "
          f"{args.out / 'summary.md'}")
    failed = sum(e.get("failed", 0) for e in record["parts"].values())
    return 0 if failed == 0 else 1
