"""capgap pretrain: train a family of teachers from scratch."""

from __future__ import annotations

import argparse

from capgap.cli.common import add_config_flags, add_run_flags, load_stage_config, print_json
from capgap.report.text import table

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = "pretrain a family of teacher models from scratch on a corpus"

COLUMNS = [("name", "size", "s"), ("params", "params", ",d"),
           ("params_non_embedding", "non-emb", ",d"), ("val_loss", "val loss", ".4f"),
           ("val_ppl", "ppl", ".2f"), ("val_bpb", "bpb", ".4f"),
           ("tokens_per_s", "tok/s", ",.0f"), ("seconds", "time s", ".0f")]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, "pretrain")
    add_run_flags(p)
    p.add_argument("--workers", type=int, default=1,
                   help="sizes trained at once in separate processes, each with cores / N "
                        "torch threads (default 1; 2 is ~1.2x faster for the micro family "
                        "on 2 cores)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")


def run(args: argparse.Namespace) -> int:
    from capgap.train.pretrain import pretrain

    cfg = load_stage_config("pretrain", args, default_preset="pythia-micro")
    results = pretrain(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                       workers=args.workers)
    rows = [r.to_dict() for r in results]
    if args.json:
        print_json(rows)
    else:
        print(table(rows, COLUMNS))
        print(f"models: {args.out}/<size>/model")
    return 0
