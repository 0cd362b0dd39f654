"""Data for every stage: a corpus and its fixed split, a tokenizer, packed token streams,
and loaders whose batches depend only on (seed, step).

Typical use::

    corpus = load_corpus()                       # embedded public-domain English, ~10.5 MB
    tokenizer = get_tokenizer(corpus, 4096)      # trained once, then cached
    store = TokenStore.build_or_load(corpus, tokenizer)
    loader = PackedLoader(store.train, seq_len=128, batch_size=32, seed=0)
    input_ids = loader.batch(step)               # (32, 128); labels = input_ids

Names backed by torch/transformers are imported on first use, so ``import capgap.data``
(and ``capgap --help``) stays fast.
"""

from __future__ import annotations

import importlib
from typing import Any

from capgap.data.cache import cache_dir
from capgap.data.corpus import (
    DEFAULT_VAL_FRACTION,
    Corpus,
    Document,
    load_corpus,
    validation_text,
)

_LAZY = {
    "PackedLoader": "capgap.data.loader",
    "calibration_batches": "capgap.data.loader",
    "eval_batches": "capgap.data.loader",
    "DEFAULT_VOCAB_SIZE": "capgap.data.tokenizer",
    "EOS_TOKEN": "capgap.data.tokenizer",
    "get_tokenizer": "capgap.data.tokenizer",
    "load_tokenizer": "capgap.data.tokenizer",
    "tokenizer_hash": "capgap.data.tokenizer",
    "train_bpe": "capgap.data.tokenizer",
    "TokenStore": "capgap.data.tokens",
}

__all__ = [
    "DEFAULT_VAL_FRACTION",
    "Corpus",
    "Document",
    "cache_dir",
    "load_corpus",
    "validation_text",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'capgap.data' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
