"""``capgap recipe minima``: teacher -> pruned -> distilled -> instruction-tuned student."""

from __future__ import annotations

import argparse
from typing import Any

from capgap.cli.common import add_config_flags, add_run_flags, load_stage_config, print_json
from capgap.errors import CapgapError

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = "run a whole compression recipe (minima: MiniMA's prune, distill, instruction-tune)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="recipe", metavar="RECIPE", required=True)
    m = sub.add_parser("minima", help="MiniMA (arXiv 2311.07052): symmetric layer drop + uniform "
                       "width cut, 50/50 distillation on a mixture, optional chat tuning",
                       description="Prune TEACHER to N params the MiniMA way, distill it, and "
                       "optionally instruction-tune it; each stage resumable in DIR/1-prune, "
                       "DIR/2-distill, DIR/3-sft.")
    m.add_argument("--teacher", help="teacher model folder or hub name")
    m.add_argument("--target-params", metavar="N", help="student size in total params (3B, 67M)")
    m.add_argument("--drop-layers", type=int, metavar="K",
                   help="drop K bottom and K top layers (default: chosen with the width)")
    m.add_argument("--tokens", type=float, help="distillation token budget, e.g. 4e5")
    m.add_argument("--corpus", help="distill on this one corpus instead of the config's mixture")
    m.add_argument("--sft", metavar="DATA", help="instruction-tune on a chat JSONL "
                   "({'messages': [{role, content}]} per line; 'sample': the bundled one)")
    m.add_argument("--chat-template", metavar="FILE",
                   help="Jinja chat template for a tokenizer that has none")
    m.add_argument("--law", metavar="LAW_JSON", help="check the teacher against a fitted law")
    m.add_argument("--teachers", metavar="A,B,C",
                   help="with --law: available teachers, as sizes (1.3B) or model folders")
    m.add_argument("--force", action="store_true", help="with --resume: continue although the "
                   "config changed (e.g. --sft added to a finished run; keys are logged)")
    m.add_argument("--json", action="store_true", help="print recipe.json")
    add_config_flags(m, "recipe")
    add_run_flags(m)


def _flags(args: argparse.Namespace) -> dict[str, Any]:
    """Flags as typed config values, applied before ``--set`` (which wins)."""
    return {
        "teacher": args.teacher, "prune.target_params": args.target_params,
        "prune.drop_layers": args.drop_layers,
        "distill.train.tokens": None if args.tokens is None else int(args.tokens),
        "distill.mixture": None if args.corpus is None else [{"corpus": args.corpus}],
        "sft.enabled": True if args.sft else None, "sft.data": args.sft,
        "sft.chat_template": args.chat_template, "law.law": args.law,
        "law.teachers": None if args.teachers is None else
        [t.strip() for t in args.teachers.split(",") if t.strip()],
    }


def run(args: argparse.Namespace) -> int:
    from capgap.recipe.minima import run_minima

    cfg = load_stage_config("recipe", args, flags=_flags(args))
    if args.force and not args.resume:
        raise CapgapError("--force only applies with --resume")
    record = run_minima(cfg, args.out, resume=args.resume, overwrite=args.overwrite,
                        force=args.force)
    if args.json:
        print_json(record)
        return 0
    s = record["shape"]
    print(f"student {s['params']:,} params ({s['layers']} layers, hidden {s['hidden']}, "
          f"{s['heads']} heads / {s['kv_heads']} KV, FFN {s['ffn']}) from {record['teacher']}")
    distilled = record["stages"]["distill"]
    print(f"distilled: val loss {distilled['val_loss']:.4f} after {distilled['tokens']:,} tokens")
    if "sft" in record["stages"]:
        loss = record["stages"]["sft"]["val_response_loss"]
        print("instruction-tuned" + ("" if loss is None else f": held-out response loss {loss:.4f}"))
    if record.get("law"):
        print(record["law"]["message"])
    print(f"model: {record['model']}")
    return 0
