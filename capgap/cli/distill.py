"""capgap distill: train a student from a frozen teacher."""

from __future__ import annotations

import argparse
import os

from capgap.cli.common import add_config_flags, add_run_flags, load_stage_config, print_json
from capgap.errors import CapgapError

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = "distill a student from a frozen teacher (alpha=1: the no-teacher baseline)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", help="teacher model folder (not needed with --alpha 1)")
    p.add_argument("--student", help="student model folder, e.g. from capgap prune")
    p.add_argument("--tokens", type=float, help="token budget, e.g. 4e5")
    p.add_argument("--alpha", type=float, help="weight of the ground-truth CE (default 0.5)")
    p.add_argument("--divergence", help="soft_ce (default), forward_kl, reverse_kl, jsd, "
                   "skew_forward_kl, skew_reverse_kl, tv")
    p.add_argument("--corpus", help="training text (default: the embedded corpus)")
    p.add_argument("--init", choices=["pretrained", "scratch"],
                   help="scratch: re-initialise the student (same shape) before training")
    p.add_argument("--teacher-cache", type=int, metavar="K",
                   help="cache the teacher's top-K log-probs once and reuse them (e.g. 64)")
    p.add_argument("--parallel", choices=["ddp", "fsdp"],
                   help="under torchrun: replicate (ddp, default) or shard (fsdp) the student")
    p.add_argument("--force", action="store_true",
                   help="with --resume: continue although the config changed (keys are logged)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_config_flags(p, "distill")
    add_run_flags(p)


def run(args: argparse.Namespace) -> int:
    from capgap.distill.engine import distill

    flags = {"teacher": args.teacher, "student": args.student, "train.tokens": args.tokens,
             "objective.alpha": args.alpha, "objective.divergence": args.divergence,
             "data.corpus": args.corpus, "init": args.init, "train.parallel": args.parallel,
             "teacher_cache.top_k": args.teacher_cache,
             "teacher_cache.enabled": True if args.teacher_cache else None}
    if args.tokens is not None:
        flags["train.tokens"] = int(args.tokens)
    cfg = load_stage_config("distill", args, default_preset="paper", flags=flags)
    if args.force and not args.resume:
        raise CapgapError("--force only applies with --resume")
    res = distill(cfg, args.out, resume=args.resume, overwrite=args.overwrite, force=args.force)
    if os.environ.get("RANK", "0") != "0":  # under torchrun only rank 0 reports
        return 0
    if args.json:
        print_json(res.to_dict())
    else:
        print(f"student {res.student_params:,} params: val loss {res.val_loss:.4f} "
              f"(ppl {res.val_ppl:.2f}, bpb {res.val_bpb:.4f}) after {res.tokens:,} tokens "
              f"in {res.seconds:.0f} s ({res.tokens_per_s:,.0f} tok/s) -> {res.model_dir}")
    return 0
