"""capgap eval: held-out loss, perplexity and bits per byte of a model."""

from __future__ import annotations

import argparse

from capgap.cli.common import print_json

HELP = "evaluate a model: held-out loss (nats/token), perplexity and bits per byte"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="a model folder, a capgap run folder, or a hub name")
    p.add_argument("--corpus", default="default",
                   help="validation text source (default: the embedded corpus)")
    p.add_argument("--max-bytes", type=int, default=0,
                   help="score the first N bytes of the validation split (0: all)")
    p.add_argument("--seq-len", type=int, default=0,
                   help="window length (default: the model's context, at most 1024)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from capgap.evaluate.api import evaluate_model

    res = evaluate_model(args.model, corpus=args.corpus, max_bytes=args.max_bytes,
                         seq_len=args.seq_len, batch_size=args.batch_size)
    if args.json:
        print_json(res)
    else:
        print(f"{args.model}: loss {res['loss']:.4f} nats/token  ppl {res['ppl']:.2f}  "
              f"bpb {res['bpb']:.4f}  ({res['tokens']:,} tokens, {res['bytes']:,} bytes, "
              f"window {res['seq_len']})")
    return 0
