"""Token streams: a corpus tokenised once per tokenizer, stored as raw memory-mapped arrays.

Every pretraining and distillation run of a sweep reads the same text, so tokenising it in
each run would waste hours at scale. A :class:`TokenStore` is keyed by (tokenizer hash,
corpus fingerprint): the first run writes ``train.bin``/``val.bin``/``meta.json`` into the
cache, every later run maps them read-only in milliseconds. Any Hugging Face tokenizer
works, so a real teacher (GPT-2, SmolLM2, ...) packs the corpus with its own vocabulary.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from capgap.data.cache import build_once, cache_dir
from capgap.data.corpus import Corpus
from capgap.data.tokenizer import tokenizer_hash
from capgap.errors import CapgapError
from capgap.io import write_json

STORE_FORMAT = 1
_BATCH_BYTES = 1 << 20  # encode ~1 MB of text per call: parallel inside, bounded memory
_PROGRESS_MIN_BYTES = 8 << 20  # show a progress bar only when tokenising takes a while


def stream_dtype(vocab_size: int) -> np.dtype:
    """uint16 when every id fits (vocab <= 65536, e.g. GPT-2, SmolLM2), else uint32."""
    return np.dtype(np.uint16 if vocab_size <= 1 << 16 else np.uint32)


@dataclass(frozen=True)
class TokenStore:
    """Packed train/validation token streams of one corpus under one tokenizer.

    Each stream is the split's texts, in order, each followed by the EOS id.
    """

    path: Path
    meta: dict[str, Any]
    train: np.ndarray  # (N_train,) read-only memmap
    val: np.ndarray  # (N_val,) read-only memmap

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])

    @property
    def eos_id(self) -> int:
        return int(self.meta["eos_id"])

    @classmethod
    def build_or_load(
        cls, corpus: Corpus, tokenizer: PreTrainedTokenizerBase, cache: Path | None = None
    ) -> TokenStore:
        """Load the streams for (corpus, tokenizer) from the cache, tokenising only if absent."""
        key = hashlib.sha256(f"{tokenizer_hash(tokenizer)}\n{corpus.fingerprint()}".encode())
        root = cache if cache is not None else cache_dir()
        path = root / "tokens" / key.hexdigest()[:16]
        return cls.load(build_once(path, lambda tmp: _build(tmp, corpus, tokenizer)))

    @classmethod
    def load(cls, path: str | Path) -> TokenStore:
        """Map an existing store folder read-only."""
        path = Path(path)
        try:
            meta = json.loads((path / "meta.json").read_text())
        except (OSError, ValueError) as e:
            raise CapgapError(f"{path} is not a token store (meta.json: {e})") from None
        dtype = np.dtype(meta["dtype"])
        train = np.memmap(path / "train.bin", dtype=dtype, mode="r", shape=(meta["train_tokens"],))
        val = np.memmap(path / "val.bin", dtype=dtype, mode="r", shape=(meta["val_tokens"],))
        return cls(path=path, meta=meta, train=train, val=val)

    def summary(self) -> dict[str, Any]:
        """Token counts and where they live."""
        keys = ("vocab_size", "dtype", "train_tokens", "val_tokens", "tokenizer_hash")
        return {"path": str(self.path), **{k: self.meta[k] for k in keys}}


def _build(folder: Path, corpus: Corpus, tokenizer: PreTrainedTokenizerBase) -> None:
    eos = tokenizer.eos_token_id
    if eos is None:
        raise CapgapError(
            f"tokenizer {tokenizer.name_or_path or type(tokenizer).__name__} has no EOS token; "
            "packing needs one to separate documents"
        )
    vocab_size = len(tokenizer)
    dtype = stream_dtype(vocab_size)
    counts = {}
    for split, texts in (("train", corpus.train_texts()), ("val", corpus.val_texts())):
        with open(folder / f"{split}.bin", "wb") as f:
            counts[split] = _write_stream(f, texts, tokenizer, eos, dtype, desc=split)
    write_json(
        folder / "meta.json",
        {
            "format": STORE_FORMAT,
            "dtype": dtype.name,
            "vocab_size": vocab_size,
            "eos_id": eos,
            "train_tokens": counts["train"],
            "val_tokens": counts["val"],
            "train_bytes": corpus.train_bytes,
            "val_bytes": corpus.val_bytes,
            "tokenizer_hash": tokenizer_hash(tokenizer),
            "tokenizer": tokenizer.name_or_path,
            "corpus_fingerprint": corpus.fingerprint(),
            "corpus": corpus.name,
        },
    )


def _write_stream(
    f: BinaryIO,
    texts: list[str],
    tokenizer: PreTrainedTokenizerBase,
    eos: int,
    dtype: np.dtype,
    desc: str,
) -> int:
    """Append each text's ids then EOS to ``f``; return the number of tokens written."""
    total_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n = 0
    with tqdm(
        total=total_bytes,
        unit="B",
        unit_scale=True,
        desc=f"tokenising {desc}",
        disable=total_bytes < _PROGRESS_MIN_BYTES,
    ) as bar:
        for batch in _batches(texts):
            # add_special_tokens=False: no BOS from Llama-style tokenizers. split_special_tokens:
            # a literal "<|endoftext|>" in the text is text, only our joins are EOS.
            # verbose=False: texts beyond model_max_length are fine, they are packed, not fed.
            ids = tokenizer(
                batch, add_special_tokens=False, split_special_tokens=True, verbose=False
            )["input_ids"]
            flat = np.fromiter((i for seq in ids for i in (*seq, eos)), dtype=np.int64, count=-1)
            if flat.size and int(flat.max()) >= 1 << (8 * dtype.itemsize):
                raise CapgapError(f"token id {int(flat.max())} does not fit {dtype.name}")
            f.write(flat.astype(dtype).tobytes())
            n += flat.size
            bar.update(sum(len(t.encode("utf-8")) for t in batch))
    return n


def _batches(texts: list[str]) -> Iterator[list[str]]:
    batch: list[str] = []
    size = 0
    for text in texts:
        batch.append(text)
        size += len(text)
        if size >= _BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch
