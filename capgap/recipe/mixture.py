"""Data mixtures: several corpora, weighted, as one corpus the distillation engine can read.

MiniMA distilled on Pile + GitHub + WuDao. ``capgap.distill`` takes one corpus spec (what
:func:`capgap.data.load_corpus` accepts) and draws its batches from that corpus's packed
token stream as a pure function of (seed, step). Rather than teach the engine a second
loader, a mixture is *materialised* once per (sources, weights, tokenizer, size, seed) into
a cached folder holding one JSONL whose token counts follow the weights; that folder is the
corpus. Every property of the engine carries over unchanged: batches are deterministic by
(seed, step) so resume stays exact, the teacher cache and the held-out split work as for
any corpus, and each batch's rows come from source ``i`` with probability ``w_i`` (the
loader draws uniform windows of a stream that is ``w_i`` source ``i``).

Proportions are by *tokens of the student's tokenizer* (code and Chinese text have very
different bytes per token). Only each source's training split is drawn from, in pieces of
``chunk_chars`` characters, in an order fixed by (seed, source content). A source that runs
out shrinks the whole mixture so that the proportions still hold; no text is repeated (a
repeated piece could land on both sides of the mixture's own train/validation split).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from capgap.data.cache import build_once, cache_dir
from capgap.data.corpus import Corpus, chunk_ends, load_corpus
from capgap.data.stream import normalise_weights
from capgap.data.tokenizer import tokenizer_hash
from capgap.errors import CapgapError
from capgap.io import write_json

_VERSION = 1  # bump when the drawing rule changes, so old cache entries are not reused
_ENCODE_BATCH = 64  # pieces tokenised per call
MIXTURE_FILE = "mixture.jsonl"
META_FILE = "mixture.json"


@dataclass
class MixtureSource:
    """One corpus of a mixture and its weight (weights need not sum to 1)."""

    corpus: str = "default"
    """Anything :func:`capgap.data.load_corpus` accepts: default, a file, a folder, hf:NAME."""
    weight: float = 1.0
    text_field: str = "text"
    """The JSONL / dataset column holding the text (e.g. ``code`` in codeparrot/github-code)."""


def normalised_weights(sources: list[MixtureSource]) -> list[float]:
    """Weights divided by their sum; a CapgapError unless they are >= 0 with a positive sum."""
    return normalise_weights([s.weight for s in sources])


def mixture_corpus(sources: list[MixtureSource], tokenizer: Any, tokens: int, seed: int = 0,
                   cache: Path | None = None) -> str:
    """A corpus spec for ``sources`` mixed by weight: the source itself when there is only
    one plain source, else a cached folder with ~``tokens`` tokens (fewer if a source runs
    out) whose per-source token counts follow the weights."""
    weights = normalised_weights(sources)
    live = [(s, w) for s, w in zip(sources, weights, strict=True) if w > 0]
    if len(live) == 1 and live[0][0].text_field == "text":
        return live[0][0].corpus
    if tokens <= 0:
        raise CapgapError(f"a mixture needs a positive token count, got {tokens}")

    corpora = [load_corpus(s.corpus, text_field=s.text_field) for s, _ in live]
    key = json.dumps({"v": _VERSION, "tokenizer": tokenizer_hash(tokenizer), "tokens": tokens,
                      "seed": seed, "sources": [[c.fingerprint(), w] for c, (_, w)
                                                in zip(corpora, live, strict=True)]})
    path = (cache or cache_dir()) / "mixtures" / hashlib.sha256(key.encode()).hexdigest()[:16]
    build_once(path, lambda tmp: _write(tmp, live, corpora, tokenizer, tokens, seed))
    return str(path)


def read_meta(path: str | Path) -> dict[str, Any] | None:
    """The realised mixture of a folder written by :func:`mixture_corpus` (None otherwise)."""
    meta = Path(path) / META_FILE
    return json.loads(meta.read_text(encoding="utf-8")) if meta.is_file() else None


def _write(folder: Path, live: list[tuple[MixtureSource, float]], corpora: list[Corpus],
           tokenizer: Any, tokens: int, seed: int) -> None:
    drawn = [_draw(c, w * tokens, tokenizer, seed) for c, (_, w) in zip(corpora, live, strict=True)]
    # A source that ran out caps the mixture: every share shrinks by the same factor.
    scale = min(1.0, *(sum(n for _, n in d) / (w * tokens)
                       for d, (_, w) in zip(drawn, live, strict=True)))
    rows, report = [], []
    for i, (d, (src, w)) in enumerate(zip(drawn, live, strict=True)):
        kept = _prefix(d, w * tokens * scale)
        rows += [{"id": f"{i}:{j}", "text": text} for j, (text, _) in enumerate(kept)]
        report.append({"corpus": src.corpus, "weight": src.weight, "share": w,
                       "tokens": sum(n for _, n in kept), "pieces": len(kept)})
    total = sum(r["tokens"] for r in report)
    for r in report:
        r["realised_share"] = r["tokens"] / total
    with open(folder / MIXTURE_FILE, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    write_json(folder / META_FILE, {"requested_tokens": tokens, "tokens": total, "seed": seed,
                                    "limited_by_source": scale < 1.0, "sources": report})


def _draw(corpus: Corpus, target: float, tokenizer: Any, seed: int) -> list[tuple[str, int]]:
    """(piece, tokens incl. EOS) of ``corpus``'s training split in a seeded order, until
    ``target`` tokens are reached or the corpus is used up. The order depends on the seed
    and the corpus content, not on where the source sits in the list."""
    pieces = _pieces(corpus)
    order = np.random.default_rng([seed, int(corpus.fingerprint()[:8], 16)]).permutation(len(pieces))
    out: list[tuple[str, int]] = []
    total = 0
    for start in range(0, len(order), _ENCODE_BATCH):
        batch = [pieces[i] for i in order[start:start + _ENCODE_BATCH]]
        # As TokenStore packs: no BOS, literal special-token text stays text, +1 for EOS.
        ids = tokenizer(batch, add_special_tokens=False, split_special_tokens=True,
                        verbose=False)["input_ids"]
        for text, seq in zip(batch, ids, strict=True):
            out.append((text, len(seq) + 1))
            total += len(seq) + 1
            if total >= target:
                return out
    return out


def _pieces(corpus: Corpus) -> list[str]:
    """The corpus's training texts cut at the corpus's own ~``chunk_chars`` breaks."""
    out = []
    for text in corpus.train_texts():
        ends = chunk_ends(text, corpus.chunk_chars)
        out += [text[a:b] for a, b in zip([0, *ends][:-1], ends, strict=True)]
    return out


def _prefix(drawn: list[tuple[str, int]], target: float) -> list[tuple[str, int]]:
    """The non-empty prefix of ``drawn`` whose token count is closest to ``target``."""
    sums = np.cumsum([n for _, n in drawn])  # (len,) tokens of each prefix
    return drawn[:int(np.argmin(np.abs(sums - target))) + 1]
