"""Text corpora and their deterministic train/validation split.

Every experiment in a capacity-gap sweep must see the same training text and be scored on
the same held-out text, whatever machine or file order it runs with. So the split is a pure
function of the content: each document is cut into ~``chunk_chars`` pieces at paragraph
breaks, and a piece goes to validation iff a keyed hash of (document id, piece index) falls
below ``val_fraction``. No random state, no dependence on ``PYTHONHASHSEED`` or file order.
"""

from __future__ import annotations

import gzip
import hashlib
import itertools
import json
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any, TextIO

from capgap.errors import CapgapError
from capgap.io import iter_jsonl

# ~2 % of the 10.5 MB embedded corpus, i.e. ~200 KB of validation text: enough for a
# bits-per-byte estimate whose noise is well below the gaps a sweep looks for, small enough
# to evaluate in seconds on a CPU.
DEFAULT_VAL_FRACTION = 0.02
# Single speeches or verses are ~100 bytes; grouping paragraphs into ~2 KB pieces keeps
# validation passages long enough that a model is scored with real context.
DEFAULT_CHUNK_CHARS = 2048
# Below this there is not enough text for a tokenizer plus a validation split.
MIN_CORPUS_BYTES = 10_000
# Part of every fingerprint: bump it whenever chunking or assignment changes, so caches
# built from the old split are not reused.
_SPLIT_VERSION = 1

TEXT_SUFFIXES = (".txt", ".txt.gz")
JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
SOURCE_HINT = "use 'default', a .txt/.jsonl file, a folder of them, or hf:NAME[:CONFIG][@SPLIT]"


@dataclass(frozen=True)
class Document:
    """One document: ``id`` is stable across runs (file path, line number, or given id)."""

    id: str
    text: str


class Corpus:
    """Documents plus their deterministic train/validation split.

    Train and validation texts are maximal runs of consecutive same-side pieces of one
    document, so text keeps its natural order and context inside each run.
    """

    def __init__(
        self,
        documents: list[Document] | tuple[Document, ...],
        name: str = "custom",
        val_fraction: float = DEFAULT_VAL_FRACTION,
        chunk_chars: int = DEFAULT_CHUNK_CHARS,
    ) -> None:
        if not 0.0 < val_fraction < 1.0:
            raise CapgapError(f"val_fraction must be in (0, 1), got {val_fraction}")
        if chunk_chars < 1:
            raise CapgapError(f"chunk_chars must be positive, got {chunk_chars}")
        self.documents = tuple(d for d in documents if d.text.strip())
        self.name = name
        self.val_fraction = val_fraction
        self.chunk_chars = chunk_chars
        self._check_ids()
        self.num_bytes = sum(len(d.text.encode("utf-8")) for d in self.documents)
        if self.num_bytes < MIN_CORPUS_BYTES:
            raise CapgapError(
                f"corpus {name!r} has {self.num_bytes} bytes of text in "
                f"{len(self.documents)} documents; at least {MIN_CORPUS_BYTES} are needed"
            )
        self._train, self._val = _split(self.documents, chunk_chars, val_fraction)
        if not self._train or not self._val:
            raise CapgapError(
                f"corpus {name!r} is too small to split into train and validation "
                f"({self.num_bytes} bytes); add text or lower chunk_chars"
            )

    def _check_ids(self) -> None:
        seen: set[str] = set()
        for doc in self.documents:
            if doc.id in seen:
                raise CapgapError(f"corpus {self.name!r}: duplicate document id {doc.id!r}")
            seen.add(doc.id)

    def __repr__(self) -> str:
        return (
            f"Corpus({self.name!r}, docs={len(self.documents)}, bytes={self.num_bytes}, "
            f"val_bytes={self.val_bytes})"
        )

    def train_texts(self) -> list[str]:
        """Training texts in a fixed order (one per run of training pieces)."""
        return list(self._train)

    def val_texts(self) -> list[str]:
        """Validation texts in a fixed order; disjoint from :meth:`train_texts`."""
        return list(self._val)

    @cached_property
    def train_bytes(self) -> int:
        return sum(len(t.encode("utf-8")) for t in self._train)

    @cached_property
    def val_bytes(self) -> int:
        return sum(len(t.encode("utf-8")) for t in self._val)

    @cached_property
    def _fingerprint(self) -> str:
        h = hashlib.sha256()
        settings = {
            "v": _SPLIT_VERSION,
            "val_fraction": self.val_fraction,
            "chunk_chars": self.chunk_chars,
        }
        h.update(json.dumps(settings, sort_keys=True).encode())
        for doc in self.documents:
            for part in (doc.id, doc.text):
                data = part.encode("utf-8")
                h.update(len(data).to_bytes(8, "little") + data)
        return h.hexdigest()

    def fingerprint(self) -> str:
        """sha256 of the documents and split settings: the cache key for everything derived."""
        return self._fingerprint

    def summary(self) -> dict[str, Any]:
        """Sizes and identity, for logs and ``capgap data prepare``."""
        return {
            "name": self.name,
            "fingerprint": self.fingerprint(),
            "documents": len(self.documents),
            "bytes": self.num_bytes,
            "train_bytes": self.train_bytes,
            "val_bytes": self.val_bytes,
            "val_fraction": self.val_fraction,
            "chunk_chars": self.chunk_chars,
        }


def validation_text(corpus: Corpus, max_bytes: int | None = None) -> str:
    """The fixed held-out text used for bits-per-byte evaluation, whatever the tokenizer.

    It is the validation texts joined by blank lines, cut to at most ``max_bytes`` UTF-8
    bytes (never inside a character). Being a prefix, a smaller budget scores a subset of
    exactly the text a larger budget scores.
    """
    text = "\n\n".join(corpus.val_texts())
    if max_bytes is None:
        return text
    if max_bytes < 1:
        raise CapgapError(f"max_bytes must be positive, got {max_bytes}")
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


# --- the split ---------------------------------------------------------------------------


def chunk_ends(text: str, size: int) -> list[int]:
    """End offsets of ~``size``-character pieces of ``text``, cut at natural breaks.

    Pieces tile ``text`` exactly, so joining consecutive pieces reproduces the original.
    """
    ends = [0]
    while ends[-1] < len(text):
        ends.append(_next_cut(text, ends[-1], size))
    return ends[1:]


def _next_cut(text: str, pos: int, size: int) -> int:
    """After ``size`` characters, cut at the next paragraph break; failing that within
    4×size, the next line break, then the next space, else hard at 4×size. Near the end of
    the text, only a paragraph break cuts, so no document ends in a sliver of a paragraph.
    """
    n = len(text)
    target, limit = pos + size, pos + 4 * size
    if target >= n:
        return n
    separators = ("\n\n",) if limit >= n else ("\n\n", "\n", " ")
    for sep in separators:
        i = text.find(sep, target, limit)
        if i >= 0:
            return i + len(sep)
    return min(limit, n)


def split_hash(doc_id: str, index: int) -> float:
    """A uniform number in [0, 1) fixed by (doc_id, index) alone."""
    digest = hashlib.blake2b(f"{doc_id}\x00{index}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def _split(
    documents: tuple[Document, ...], size: int, val_fraction: float
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    pieces: list[list[str]] = []
    scores: list[list[float]] = []
    for doc in documents:
        ends = chunk_ends(doc.text, size)
        pieces.append([doc.text[a:b] for a, b in zip([0, *ends][:-1], ends, strict=True)])
        scores.append([split_hash(doc.id, i) for i in range(len(ends))])
    # Small corpora may draw no validation piece at all: the piece with the lowest hash then
    # goes to validation, which is still a pure function of the content.
    lowest = min(s for row in scores for s in row)
    train: list[str] = []
    val: list[tuple[float, str]] = []
    for doc_pieces, doc_scores in zip(pieces, scores, strict=True):
        runs = itertools.groupby(
            zip(doc_scores, doc_pieces, strict=True),
            lambda x: x[0] < val_fraction or x[0] == lowest,
        )
        for is_val, group in runs:
            run = list(group)
            text = "".join(p for _, p in run).strip()
            if text and is_val:
                val.append((run[0][0], text))
            elif text:
                train.append(text)
    # Validation runs are ordered by their hash, a stable shuffle: any prefix of the
    # validation text (see validation_text) then samples every source, not just the first.
    return tuple(train), tuple(text for _, text in sorted(val))


# --- sources -----------------------------------------------------------------------------


def load_corpus(
    source: str | Path | None = None,
    *,
    text_field: str = "text",
    val_fraction: float = DEFAULT_VAL_FRACTION,
    chunk_chars: int = DEFAULT_CHUNK_CHARS,
) -> Corpus:
    """Load a corpus.

    ``source``: ``None``/``"default"`` (the embedded public-domain English corpus), a
    ``.txt`` file (one document), a ``.jsonl`` file (one document per line, text in
    ``text_field``), a folder of such files (searched recursively, sorted by path; ``.gz``
    variants accepted), or ``hf:NAME[:CONFIG][@SPLIT]`` for a Hugging Face dataset (needs
    the optional ``datasets`` package and, usually, network access).
    """
    name = "default" if source is None else str(source)
    return Corpus(
        _read_source(name, text_field),
        name=name,
        val_fraction=val_fraction,
        chunk_chars=chunk_chars,
    )


def _read_source(source: str, text_field: str) -> list[Document]:
    if source == "default":
        return embedded_documents()
    if source.startswith("hf:"):
        return _huggingface(source[3:], text_field)
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder(path, text_field)
    if path.is_file():
        if not path.name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES):
            raise CapgapError(f"corpus source {source}: unsupported file type; {SOURCE_HINT}")
        return list(read_file_documents(path, path.name, text_field))
    raise CapgapError(f"corpus source {source}: no such file or folder; {SOURCE_HINT}")


def embedded_documents() -> list[Document]:
    folder = resources.files("capgap.data").joinpath("corpus")
    files = sorted((f for f in folder.iterdir() if f.name.endswith(".jsonl.gz")), key=str)
    if not files:
        raise CapgapError("the embedded corpus is missing; reinstall capgap")
    docs: list[Document] = []
    for f in files:
        with f.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as text:
            docs.extend(_parse_jsonl(text, f.name, "text", id_prefix=""))
    return docs


def _folder(path: Path, text_field: str) -> list[Document]:
    files = sorted(
        p
        for p in path.rglob("*")
        if p.is_file() and p.name.endswith(TEXT_SUFFIXES + JSONL_SUFFIXES)
    )
    if not files:
        raise CapgapError(f"corpus folder {path} has no .txt or .jsonl files")
    docs: list[Document] = []
    for f in files:
        docs.extend(read_file_documents(f, f.relative_to(path).as_posix(), text_field))
    return docs


def _open_text(path: Path) -> TextIO:
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8")
    return open(path, encoding="utf-8")


def read_file_documents(path: Path, doc_id: str, text_field: str) -> Iterator[Document]:
    try:
        with _open_text(path) as f:
            if path.name.endswith(JSONL_SUFFIXES):
                yield from _parse_jsonl(f, str(path), text_field, id_prefix=f"{doc_id}:")
            else:
                yield Document(doc_id, f.read())
    except UnicodeDecodeError as e:
        raise CapgapError(f"corpus file {path} is not UTF-8 text ({e.reason})") from None


def _parse_jsonl(f: TextIO, where: str, text_field: str, id_prefix: str) -> Iterator[Document]:
    """Documents from JSON lines; a row's ``id`` field, if present, names its document."""
    for lineno, row in iter_jsonl(f, where):
        if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
            keys = sorted(row) if isinstance(row, dict) else type(row).__name__
            raise CapgapError(
                f"{where}:{lineno}: no string field {text_field!r} (found {keys}); "
                "pick the field with --text-field"
            )
        yield Document(f"{id_prefix}{row.get('id', lineno)}", row[text_field])


def _huggingface(spec: str, text_field: str) -> list[Document]:
    """``NAME[:CONFIG][@SPLIT]`` via ``datasets.load_dataset`` (split defaults to train)."""
    try:
        import datasets
    except ImportError:
        raise CapgapError(
            f"corpus hf:{spec} needs the datasets package: pip install 'capgap[data]'"
        ) from None
    spec, _, split = spec.partition("@")
    name, _, config = spec.partition(":")
    split = split or "train"
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # datasets raises many types for bad names/offline/no split
        raise CapgapError(f"could not load hf:{spec}@{split}: {type(e).__name__}: {e}") from e
    if text_field not in ds.column_names:
        raise CapgapError(
            f"hf:{spec}@{split} has no column {text_field!r} (columns: {ds.column_names}); "
            "pick one with --text-field"
        )
    return [Document(f"{name}@{split}:{i}", t) for i, t in enumerate(ds[text_field]) if t]
