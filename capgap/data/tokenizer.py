"""Byte-level BPE tokenizers trained on a corpus, cached by (corpus, vocabulary size).

Micro models want a small vocabulary (a 50k embedding would dwarf an 8M-parameter model and
cost ~9× the compute on a CPU), so by default capgap trains its own 4096-token byte-level
BPE on the corpus' training split. Byte-level means every string round-trips exactly and
no unknown token is needed. The result is a plain Hugging Face tokenizer folder, so every
checkpoint capgap writes loads with ``AutoTokenizer.from_pretrained`` anywhere.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from capgap.data.cache import build_once, cache_dir
from capgap.data.corpus import Corpus
from capgap.errors import CapgapError
from capgap.io import write_json

EOS_TOKEN = "<|endoftext|>"
DEFAULT_VOCAB_SIZE = 4096
_MIN_VOCAB_SIZE = 257  # 256 byte symbols + EOS


def train_bpe(texts: list[str], vocab_size: int = DEFAULT_VOCAB_SIZE) -> PreTrainedTokenizerFast:
    """Train a GPT-2-style byte-level BPE with ``<|endoftext|>`` as bos/eos/pad (id 0).

    Deterministic: the same texts and size give an identical ``tokenizer.json`` (the
    ``tokenizers`` trainer sorts its alphabet and breaks count ties by pair id).
    """
    if vocab_size < _MIN_VOCAB_SIZE:
        raise CapgapError(f"vocab size must be at least {_MIN_VOCAB_SIZE}, got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer, length=len(texts))
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=EOS_TOKEN, eos_token=EOS_TOKEN, pad_token=EOS_TOKEN
    )


def tokenizer_path(corpus: Corpus, vocab_size: int, cache: Path | None = None) -> Path:
    """Cache folder of the BPE trained on ``corpus`` with ``vocab_size`` tokens."""
    root = cache if cache is not None else cache_dir()
    return root / "tokenizers" / f"bpe{vocab_size}-{corpus.fingerprint()[:16]}"


def get_tokenizer(
    corpus: Corpus, vocab_size: int = DEFAULT_VOCAB_SIZE, cache: Path | None = None
) -> PreTrainedTokenizerBase:
    """The BPE for ``corpus``: trained on its training split once, then loaded from cache."""
    path = tokenizer_path(corpus, vocab_size, cache)

    def build(tmp: Path) -> None:
        train_bpe(corpus.train_texts(), vocab_size).save_pretrained(tmp)
        info = {"corpus": corpus.summary(), "vocab_size": vocab_size, "trained_on": "train"}
        write_json(tmp / "capgap_tokenizer.json", info)

    return load_tokenizer(build_once(path, build))


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """Load a Hugging Face tokenizer folder (offline), with a one-line error if it is not one."""
    try:
        return AutoTokenizer.from_pretrained(str(path))
    except (OSError, ValueError) as e:
        raise CapgapError(f"cannot load a tokenizer from {path}: {e}".splitlines()[0]) from e


def tokenizer_hash(tokenizer: PreTrainedTokenizerBase) -> str:
    """sha256 identifying what a tokenizer does, for cache keys of token streams.

    Fast tokenizers are hashed by their serialised ``tokenizer.json``; others by the files
    ``save_pretrained`` writes. The EOS id is included because packing inserts it.
    """
    h = hashlib.sha256(f"eos={tokenizer.eos_token_id}\n".encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        h.update(backend.to_str().encode("utf-8"))
        return h.hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        for f in sorted(Path(tmp).iterdir()):
            h.update(f.name.encode() + b"\0" + f.read_bytes())
    return h.hexdigest()
