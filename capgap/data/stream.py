"""Token stores built by streaming: a weighted mixture larger than memory, written straight
into the packed streams the loaders map.

The in-memory path (:func:`capgap.data.load_corpus`, then :class:`TokenStore`) holds every
document as a Python string: right for the embedded corpus and for millions of tokens, not for
an LLM-scale mixture (MiniMA distilled on 126B tokens of Pile, GitHub and WuDao). Here each
source is *read lazily* — local ``.txt``/``.jsonl(.gz)`` files document by document, ``hf:``
datasets with ``streaming=True`` — and each document goes through:

1. a seeded shuffle buffer per source (``shuffle_buffer`` documents), so a source sorted by
   topic or date is mixed before it is cut off at the token budget;
2. the same split as :class:`capgap.data.Corpus`: ~``chunk_chars`` pieces at paragraph breaks,
   a piece held out iff a keyed hash of (document id, piece index) is below ``val_fraction``;
3. batched tokenisation (the fast tokenizer's own threads), ids + EOS appended to
   ``train.bin`` / ``val.bin``.

Sources are interleaved *by training tokens of this tokenizer*: the next piece always comes
from the source furthest below its share, so the train stream follows the weights to within
one piece at every prefix. The build stops at ``tokens`` training tokens, or when a source
runs out (then every share stops where it is, and ``meta.json`` says so); if no held-out piece
came up on the way, the sources are read on, without training on them, until one does.
Memory is bounded
by the shuffle buffers and one tokeniser batch; the folder appears atomically in the cache and
is a :class:`TokenStore` (plus ``val.txt``, the first ``val_text_bytes`` of held-out text, for
bits-per-byte). A run names it as its corpus with ``tokens:PATH``.

Multi-process runs: build it once before launching (``capgap data stream``); every rank then
maps the same files read-only and the engine gives each rank its own rows of each batch.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from capgap.data.cache import build_once, cache_dir
from capgap.data.corpus import (
    DEFAULT_CHUNK_CHARS,
    DEFAULT_VAL_FRACTION,
    JSONL_SUFFIXES,
    SOURCE_HINT,
    TEXT_SUFFIXES,
    chunk_ends,
    embedded_documents,
    read_file_documents,
    split_hash,
)
from capgap.data.tokenizer import tokenizer_hash
from capgap.data.tokens import STORE_FORMAT, stream_dtype
from capgap.errors import CapgapError
from capgap.io import write_json, write_text

TOKENS_PREFIX = "tokens:"
VAL_TEXT = "val.txt"
_VERSION = 1  # bump when the build rule changes, so old cache entries are not reused
_ENCODE_PIECES = 256  # pieces tokenised per call


@dataclass
class StreamSource:
    """One source of a streamed mixture and its weight (weights need not sum to 1)."""

    corpus: str = "default"
    weight: float = 1.0
    text_field: str = "text"


@dataclass
class _Piece:
    ids: np.ndarray  # token ids followed by EOS
    text: str
    val: bool


def is_token_store_spec(spec: str | None) -> bool:
    """``tokens:PATH`` names a prebuilt token store instead of a corpus."""
    return bool(spec) and str(spec).startswith(TOKENS_PREFIX)


def store_path(spec: str) -> Path:
    """The folder of a ``tokens:PATH`` spec, checked to be a token store."""
    path = Path(spec[len(TOKENS_PREFIX):]).expanduser()
    if not (path / "meta.json").is_file():
        raise CapgapError(f"{spec}: not a token store (no meta.json); build one with "
                          "`capgap data stream`")
    return path


def validation_text_of(path: Path, max_bytes: int | None = None) -> str:
    """The held-out text saved beside a streamed store (a prefix of it with ``max_bytes``)."""
    file = path / VAL_TEXT
    if not file.is_file():
        raise CapgapError(f"{path}: token store has no {VAL_TEXT}, so no held-out text to "
                          "score; build it with `capgap data stream`")
    text = file.read_text(encoding="utf-8")
    if max_bytes is None:
        return text
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")


def stream_store(sources: list[StreamSource], tokenizer: Any, tokens: int, *, seed: int = 0,
                 shuffle_buffer: int = 10_000, chunk_chars: int = DEFAULT_CHUNK_CHARS,
                 val_fraction: float = DEFAULT_VAL_FRACTION, val_text_bytes: int = 8 << 20,
                 cache: Path | None = None, out: Path | None = None) -> Path:
    """Build (or find in the cache) the streamed store of ``sources``; return its folder.

    ``out`` writes it to a chosen folder instead of the content-addressed cache (an existing
    complete store there is reused when it was built with the same settings)."""
    weights = _weights(sources)
    if tokens <= 0:
        raise CapgapError(f"a streamed store needs a positive token count, got {tokens}")
    if shuffle_buffer < 1 or chunk_chars < 1 or not 0.0 < val_fraction < 1.0:
        raise CapgapError("shuffle_buffer and chunk_chars must be positive and val_fraction "
                          f"in (0, 1), got {shuffle_buffer}, {chunk_chars}, {val_fraction}")
    if tokenizer.eos_token_id is None:
        raise CapgapError("the tokenizer has no EOS token; packing needs one between documents")
    for s in sources:
        _check_source(s.corpus)
    settings = {"v": _VERSION, "tokenizer": tokenizer_hash(tokenizer), "tokens": tokens,
                "seed": seed, "shuffle_buffer": shuffle_buffer, "chunk_chars": chunk_chars,
                "val_fraction": val_fraction, "val_text_bytes": val_text_bytes,
                "sources": [[s.corpus, s.text_field, w, _signature(s.corpus)]
                            for s, w in zip(sources, weights, strict=True)]}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(out) if out is not None else (cache or cache_dir()) / "streams" / key
    if path.is_dir():
        meta = json.loads((path / "meta.json").read_text()) if (path / "meta.json").is_file() \
            else {}
        if meta.get("build_key") != key:
            raise CapgapError(f"{path} exists and is not this stream's store; choose another "
                              "--out or remove it")
        return path
    return build_once(path, lambda tmp: _build(tmp, sources, weights, tokenizer, tokens,
                                               settings, key))


def normalise_weights(weights: list[float]) -> list[float]:
    """Mixture weights divided by their sum; a CapgapError unless there is at least one, all
    are finite and >= 0, and their sum is positive."""
    if not weights:
        raise CapgapError("a data mixture needs at least one source")
    ws = [float(w) for w in weights]
    if any(not math.isfinite(w) or w < 0 for w in ws) or sum(ws) <= 0:
        raise CapgapError(f"mixture weights must be >= 0 and sum to a positive number, got {ws}")
    return [w / sum(ws) for w in ws]


def _weights(sources: list[StreamSource]) -> list[float]:
    return normalise_weights([s.weight for s in sources])


def _check_source(spec: str) -> None:
    if spec in ("default", "") or spec.startswith("hf:"):
        return
    if not Path(spec).expanduser().exists():
        raise CapgapError(f"corpus source {spec}: no such file or folder; {SOURCE_HINT}")


def _signature(spec: str) -> Any:
    """What identifies a source's content cheaply: size and mtime of local files (a hub name
    is taken as is: a dataset changed under the same name needs a new ``--out``)."""
    path = Path(spec).expanduser()
    if spec == "default" or spec.startswith("hf:") or not path.exists():
        return spec
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    return [[str(f), f.stat().st_size, int(f.stat().st_mtime)] for f in files]


def iter_documents(spec: str, text_field: str = "text") -> Iterator[tuple[str, str]]:
    """(document id, text) of a source, lazily: one file or one dataset row at a time."""
    if spec in ("default", ""):
        for d in embedded_documents():
            yield d.id, d.text
        return
    if spec.startswith("hf:"):
        yield from _hf_documents(spec[3:], text_field)
        return
    path = Path(spec).expanduser()
    suffixes = TEXT_SUFFIXES + JSONL_SUFFIXES
    files = [path] if path.is_file() else sorted(
        p for p in path.rglob("*") if p.is_file() and p.name.endswith(suffixes))
    if not files:
        raise CapgapError(f"corpus source {spec}: no .txt or .jsonl files")
    for f in files:
        doc_id = f.name if f == path else f.relative_to(path).as_posix()
        for d in read_file_documents(f, doc_id, text_field):
            yield d.id, d.text


def _hf_documents(spec: str, text_field: str) -> Iterator[tuple[str, str]]:
    """``NAME[:CONFIG][@SPLIT]`` through ``datasets.load_dataset(..., streaming=True)``."""
    try:
        import datasets
    except ImportError:
        raise CapgapError(f"corpus hf:{spec} needs the datasets package: "
                          "pip install 'capgap[data]'") from None
    spec, _, split = spec.partition("@")
    name, _, config = spec.partition(":")
    split = split or "train"
    try:
        ds = datasets.load_dataset(name, config or None, split=split, streaming=True)
    except Exception as e:  # datasets raises many types for bad names/offline/no split
        raise CapgapError(f"could not stream hf:{spec}@{split}: {type(e).__name__}: {e}") from e
    for i, row in enumerate(ds):
        text = row.get(text_field)
        if not isinstance(text, str):
            raise CapgapError(f"hf:{spec}@{split} row {i} has no string column {text_field!r} "
                              f"(columns: {sorted(row)}); pick one with text_field")
        if text:
            yield f"{name}@{split}:{i}", text


def shuffled(items: Iterator[Any], buffer: int, rng: np.random.Generator) -> Iterator[Any]:
    """A seeded buffer shuffle: each item leaves at a random time within ``buffer`` draws."""
    pool: list[Any] = []
    for item in items:
        if len(pool) < buffer:
            pool.append(item)
            continue
        j = int(rng.integers(buffer))
        pool[j], item = item, pool[j]
        yield item
    rng.shuffle(pool)  # type: ignore[arg-type]
    yield from pool


def _pieces(docs: Iterator[tuple[str, str]], chunk_chars: int,
            val_fraction: float) -> Iterator[tuple[str, bool]]:
    """(text, held out) of each document's pieces, split as Corpus splits them: training
    pieces one by one (the unit the mixture's shares are counted in), consecutive held-out
    pieces joined into one run, as in :meth:`Corpus.val_texts`."""
    for doc_id, text in docs:
        ends = chunk_ends(text, chunk_chars)
        run: list[str] = []
        for i, (a, b) in enumerate(zip([0, *ends][:-1], ends, strict=True)):
            if split_hash(doc_id, i) < val_fraction:
                run.append(text[a:b])
                continue
            if run and (joined := "".join(run).strip()):
                yield joined, True
            run = []
            if text[a:b].strip():
                yield text[a:b], False
        if run and (joined := "".join(run).strip()):
            yield joined, True


def _encoded(pieces: Iterator[tuple[str, bool]], tokenizer: Any,
             eos: int) -> Iterator[_Piece]:
    batch: list[tuple[str, bool]] = []

    def flush() -> Iterator[_Piece]:
        # As TokenStore packs: no BOS, literal special-token text stays text, EOS after each.
        ids = tokenizer([t for t, _ in batch], add_special_tokens=False,
                        split_special_tokens=True, verbose=False)["input_ids"]
        for (text, val), seq in zip(batch, ids, strict=True):
            yield _Piece(np.asarray([*seq, eos], dtype=np.int64), text, val)

    for p in pieces:
        batch.append(p)
        if len(batch) >= _ENCODE_PIECES:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


def _build(folder: Path, sources: list[StreamSource], weights: list[float], tokenizer: Any,
           tokens: int, settings: dict[str, Any], key: str) -> None:
    from tqdm.auto import tqdm

    eos = int(tokenizer.eos_token_id)
    vocab = len(tokenizer)
    dtype = stream_dtype(vocab)
    live = [i for i, w in enumerate(weights) if w > 0]
    streams = {i: _encoded(_pieces(shuffled(iter_documents(sources[i].corpus,
                                                          sources[i].text_field),
                                            settings["shuffle_buffer"],
                                            np.random.default_rng([settings["seed"], i])),
                                   settings["chunk_chars"], settings["val_fraction"]),
                           tokenizer, eos) for i in live}
    got = dict.fromkeys(live, 0)
    report = {i: {"corpus": sources[i].corpus, "weight": sources[i].weight, "share": weights[i],
                  "tokens": 0, "pieces": 0, "val_tokens": 0, "exhausted": False} for i in live}
    counts = {"train": 0, "val": 0, "train_bytes": 0, "val_bytes": 0}
    val_text = {"parts": [], "left": settings["val_text_bytes"]}  # only what val.txt keeps
    with open(folder / "train.bin", "wb") as train, open(folder / "val.bin", "wb") as val, \
            tqdm(total=tokens, unit="tok", unit_scale=True, desc="streaming mixture",
                 disable=tokens < 1 << 22) as bar:
        while counts["train"] < tokens:
            i = min(live, key=lambda k: (got[k] / weights[k], k))  # furthest below its share
            piece = _next_train(streams[i], val, val_text, report[i], counts, dtype, vocab)
            if piece is None:
                report[i]["exhausted"] = True
                break
            nbytes = len(piece.text.encode("utf-8"))
            train.write(piece.ids.astype(dtype).tobytes())
            got[i] += piece.ids.size
            report[i]["tokens"] += piece.ids.size
            report[i]["pieces"] += 1
            counts["train"] += piece.ids.size
            counts["train_bytes"] += nbytes
            bar.update(piece.ids.size)
        for i in live:  # no held-out piece on the way: read on (without training) to one
            while counts["val"] == 0 and _next_train(streams[i], val, val_text, report[i],
                                                     counts, dtype, vocab) is not None:
                pass
    if counts["train"] == 0 or counts["val"] == 0:
        side = "training" if counts["train"] == 0 else "validation"
        raise CapgapError(f"the streamed sources gave no {side} text (val_fraction "
                          f"{settings['val_fraction']}); give more text or a larger fraction")
    write_text(folder / VAL_TEXT, _cap("\n\n".join(val_text["parts"]),
                                      settings["val_text_bytes"]))
    total = counts["train"]
    for r in report.values():
        r["realised_share"] = r["tokens"] / total
    write_json(folder / "meta.json", {
        "format": STORE_FORMAT, "dtype": dtype.name, "vocab_size": vocab, "eos_id": eos,
        "train_tokens": counts["train"], "val_tokens": counts["val"],
        "train_bytes": counts["train_bytes"], "val_bytes": counts["val_bytes"],
        "tokenizer_hash": settings["tokenizer"], "tokenizer": tokenizer.name_or_path,
        "corpus_fingerprint": key, "corpus": "stream:" + "+".join(s.corpus for s in sources),
        "build_key": key, "requested_tokens": tokens,
        "limited_by_source": counts["train"] < tokens, "settings": settings,
        "sources": list(report.values())})


def _next_train(stream: Iterator[_Piece], val: Any, val_text: dict[str, Any],
                report: dict[str, Any],
                counts: dict[str, int], dtype: np.dtype, vocab: int) -> _Piece | None:
    """The source's next training piece; held-out pieces met on the way go to ``val``."""
    for piece in stream:
        if piece.ids.size and int(piece.ids.max()) >= vocab:
            raise CapgapError(f"token id {int(piece.ids.max())} is outside the vocabulary")
        if not piece.val:
            return piece
        val.write(piece.ids.astype(dtype).tobytes())
        counts["val"] += piece.ids.size
        counts["val_bytes"] += len(piece.text.encode("utf-8"))
        report["val_tokens"] += piece.ids.size
        if val_text["left"] > 0:
            val_text["parts"].append(piece.text)
            val_text["left"] -= len(piece.text.encode("utf-8")) + 2
    return None


def _cap(text: str, max_bytes: int) -> str:
    return text.encode("utf-8")[:max_bytes].decode("utf-8", errors="ignore")
