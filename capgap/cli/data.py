"""``capgap data prepare``: corpus → tokenizer → packed token streams, all cached."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from capgap.data.corpus import DEFAULT_CHUNK_CHARS, DEFAULT_VAL_FRACTION
from capgap.errors import CapgapError
from capgap.io import atomic_dir, write_json

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

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
    stream_help = ("stream a weighted mixture of corpora (local files or hf: datasets, never "
                   "held in memory) into a token store that runs name as tokens:DIR")
    q = sub.add_parser("stream", help=stream_help, description=stream_help)
    q.add_argument("--source", action="append", required=True, metavar="SRC[=WEIGHT]",
                   help="a corpus (as for prepare) and its weight, e.g. hf:NAME=0.7 (repeat)")
    q.add_argument("--tokenizer", required=True, metavar="DIR",
                   help="the student's Hugging Face tokenizer (or model) folder")
    q.add_argument("--tokens", type=float, required=True,
                   help="training tokens to stream, e.g. 2e9")
    q.add_argument("--text-field", default="text", help="JSONL/dataset text field (default: text)")
    q.add_argument("--seed", type=int, default=0, help="shuffle seed (default: 0)")
    q.add_argument("--shuffle-buffer", type=int, default=10_000,
                   help="documents per source in the shuffle buffer (default: %(default)s)")
    q.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION,
                   help="share of pieces held out (default: %(default)s)")
    q.add_argument("--out", metavar="DIR", type=Path,
                   help="write the store here (default: the content-addressed cache)")
    q.add_argument("--json", action="store_true", help="print the store's meta.json")


def run(args: argparse.Namespace) -> int:
    if args.action == "stream":
        meta = stream(args)
        if args.json:
            print(json.dumps(meta, indent=2))
        else:
            for src in meta["sources"]:
                print(f"{src['corpus']}: {src['tokens']:,} train tokens "
                      f"({100 * src['realised_share']:.1f} %, asked {100 * src['share']:.1f} %)"
                      + (", ran out" if src["exhausted"] else ""))
            print(f"store      tokens:{meta['path']} (train {meta['train_tokens']:,}, "
                  f"val {meta['val_tokens']:,})")
        return 0
    if args.action != "prepare":
        raise CapgapError(f"unknown action {args.action!r}")
    summary = prepare(args)
    print(json.dumps(summary, indent=2) if args.json else _format(summary))
    return 0


def stream(args: argparse.Namespace) -> dict[str, Any]:
    """Build (or reuse) the streamed store and return its meta.json plus its path."""
    from capgap.data.stream import stream_store
    from capgap.data.tokenizer import load_tokenizer

    sources = [_source(text, args.text_field) for text in args.source]
    path = stream_store(sources, load_tokenizer(args.tokenizer), int(args.tokens),
                        seed=args.seed, shuffle_buffer=args.shuffle_buffer,
                        val_fraction=args.val_fraction, out=args.out)
    return json.loads((path / "meta.json").read_text(encoding="utf-8")) | {"path": str(path)}


def _source(text: str, text_field: str) -> Any:
    from capgap.data.stream import StreamSource

    spec, sep, weight = text.rpartition("=")
    if not sep:
        return StreamSource(text, 1.0, text_field)
    try:
        return StreamSource(spec, float(weight), text_field)
    except ValueError:
        raise CapgapError(f"--source {text}: the weight after '=' must be a number") from None


def prepare(args: argparse.Namespace) -> dict[str, Any]:
    """Do the work and return the summary (corpus, tokenizer and token-stream facts)."""
    from capgap.data import DEFAULT_VOCAB_SIZE, TokenStore, get_tokenizer, load_corpus
    from capgap.data.tokenizer import load_tokenizer, tokenizer_hash

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
