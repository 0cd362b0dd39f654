"""capgap distill: train a student from a frozen teacher."""

from __future__ import annotations

import argparse

from capgap.cli.common import add_config_flags, add_run_flags, load_stage_config, print_json

HELP = "distill a student from a frozen teacher (alpha=1: the no-teacher baseline)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", help="teacher model folder (not needed with --alpha 1)")
    p.add_argument("--student", help="student model folder, e.g. from capgap prune")
    p.add_argument("--tokens", type=float, help="token budget, e.g. 4e5")
    p.add_argument("--alpha", type=float, help="weight of the ground-truth CE (default 0.5)")
    p.add_argument("--divergence", help="soft_ce (default), forward_kl, reverse_kl, jsd, "
                   "skew_forward_kl, skew_reverse_kl, tv")
    p.add_argument("--corpus", help="training text (default: the embedded corpus)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    add_config_flags(p, "distill")
    add_run_flags(p)


def run(args: argparse.Namespace) -> int:
    from capgap.distill.engine import DistillConfig, distill

    flags = {"teacher": args.teacher, "student": args.student, "train.tokens": args.tokens,
             "objective.alpha": args.alpha, "objective.divergence": args.divergence,
             "data.corpus": args.corpus}
    args.overrides = [f"{k}={v if k != 'train.tokens' else int(v)}"
                      for k, v in flags.items() if v is not None] + args.overrides
    cfg = load_stage_config(DistillConfig, "distill", args, default_preset="paper")
    res = distill(cfg, args.out, resume=args.resume, overwrite=args.overwrite)
    if args.json:
        print_json(res.to_dict())
    else:
        print(f"student {res.student_params:,} params: val loss {res.val_loss:.4f} "
              f"(ppl {res.val_ppl:.2f}, bpb {res.val_bpb:.4f}) after {res.tokens:,} tokens "
              f"in {res.seconds:.0f} s ({res.tokens_per_s:,.0f} tok/s) -> {res.model_dir}")
    return 0
