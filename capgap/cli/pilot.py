"""capgap pilot: the main job on the embedded default."""

from __future__ import annotations

import argparse
from pathlib import Path

from capgap.cli.common import add_config_flags, load_stage_config, table
from capgap.cli.pretrain import COLUMNS

HELP = "the main job: pretrain and evaluate the default micro family (resumable)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_config_flags(p, "pretrain")
    p.add_argument("--out", type=Path, default=Path("runs/pilot"),
                   help="output folder (default: runs/pilot); re-running resumes it")
    p.add_argument("--overwrite", action="store_true", help="start again from scratch")


def run(args: argparse.Namespace) -> int:
    from capgap.train.pretrain import PretrainConfig, pretrain

    cfg = load_stage_config(PretrainConfig, "pretrain", args, default_preset="pythia-micro")
    teachers = args.out / "teachers"
    results = pretrain(cfg, teachers, resume=not args.overwrite, overwrite=args.overwrite)
    rows = [r.to_dict() for r in results]
    print(f"\nteacher family {cfg.family}: held-out loss on the validation split")
    print(table(rows, COLUMNS))
    losses = [r.val_loss for r in results]
    falls = all(b < a for a, b in zip(losses, losses[1:], strict=False))
    print("validation loss falls with every step up in size: " + ("yes" if falls else "NO"))
    return 0
