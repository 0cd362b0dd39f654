"""``capgap data prepare``: corpus → tokenizer → packed token streams, all cached."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from capgap.data.corpus import DEFAULT_CHUNK_CHARS, DEFAULT_VAL_FRACTION
from capgap.errors import CapgapError

HELP = "Prepare data: load a corpus, train or load a tokenizer, tokenise it once into the cache."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = sub.add_parser("prepare", help=HELP, description=HELP)
    p.add_argument(
        "--corpus",
        default="default",
        metavar="SRC",
        help="'default' (embedded English corpus), a .txt/.jsonl file, a folder, "
        "or hf:NAME[:CONFIG][@SPLIT] (default: %(default)s)",
    )
    p.add_argument("--text-field", default="text", help="JSONL/dataset text field (default: text)")
    p.add_argument(
        "--val-fraction",
        type=float,
        default=DEFAULT_VAL_FRACTION,
        help="share of text held out for validation (default: %(default)s)",
    )
    p.add_argument(
        "--chunk-chars",
        type=int,
        default=DEFAULT_CHUNK_CHARS,
        help="size of the pieces the split assigns (default: %(default)s)",
    )
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--vocab-size", type=int, default=None, help="train a BPE of this size (default: 4096)"
    )
    group.add_argument(
        "--tokenizer", metavar="DIR", help="use this Hugging Face tokenizer folder instead"
    )
    p.add_argument(
        "--out", metavar="DIR", type=Path, help="also save the tokenizer and data.json here"
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")


def run(args: argparse.Namespace) -> int:
    if args.action != "prepare":
        raise CapgapError(f"unknown action {args.action!r}")
    summary = prepare(args)
    print(json.dumps(summary, indent=2) if args.json else _format(summary))
    return 0


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Do the work and return the summary (corpus, tokenizer and token-stream facts)."""
    from capgap.data import DEFAULT_VOCAB_SIZE, TokenStore, get_tokenizer, load_corpus
    from capgap.data.tokenizer import load_tokenizer, tokenizer_hash
    from capgap.io import atomic_dir, write_json

    corpus = load_corpus(
        args.corpus,
        text_field=args.text_field,
        val_fraction=args.val_fraction,
        chunk_chars=args.chunk_chars,
    )
    if args.tokenizer:
        tokenizer = load_tokenizer(args.tokenizer)
    else:
        tokenizer = get_tokenizer(corpus, args.vocab_size or DEFAULT_VOCAB_SIZE)
    store = TokenStore.build_or_load(corpus, tokenizer)
    summary = {
        "corpus": corpus.summary(),
        "tokenizer": {
            "path": str(tokenizer.name_or_path),
            "vocab_size": len(tokenizer),
            "hash": tokenizer_hash(tokenizer),
        },
        "tokens": store.summary(),
    }
    if args.out:
        with atomic_dir(args.out / "tokenizer", overwrite=True) as tmp:
            tokenizer.save_pretrained(tmp)
        write_json(args.out / "data.json", summary)
    return summary


def _format(s: dict[str, Any]) -> str:
    c, t, k = s["corpus"], s["tokenizer"], s["tokens"]
    return "\n".join(
        [
            f"corpus     {c['name']}: {c['documents']} documents, {c['bytes']:,} bytes "
            f"(train {c['train_bytes']:,}, val {c['val_bytes']:,})",
            f"tokenizer  {t['path']} (vocab {t['vocab_size']})",
            f"tokens     train {k['train_tokens']:,} "
            f"({c['train_bytes'] / k['train_tokens']:.2f} bytes/token), "
            f"val {k['val_tokens']:,} ({c['val_bytes'] / k['val_tokens']:.2f} bytes/token), "
            f"{k['dtype']}",
            f"cache      {k['path']}",
            f"key        corpus {c['fingerprint'][:16]}, tokenizer {t['hash'][:16]}",
        ]
    )
