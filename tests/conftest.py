"""Test-wide settings: offline, private caches, deterministic threads."""

from __future__ import annotations

import os
import tempfile

# Set before transformers/huggingface_hub are imported anywhere.
_TMP = tempfile.mkdtemp(prefix="capgap-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_TMP, "hf")
os.environ.setdefault("CAPGAP_CACHE", os.path.join(_TMP, "cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)


# --- shared tiny data (capgap.data) --------------------------------------------------------
# Session-scoped so every test package can reuse one ~110 KB corpus, a 300-token BPE and its
# packed streams (built in about a second) instead of touching the full embedded corpus.

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus():
    """~110 KB slice of the embedded corpus: 1000 characters from the middle of each work."""
    from capgap.data import Corpus, Document, load_corpus

    docs = [
        Document(d.id, d.text[len(d.text) // 2 : len(d.text) // 2 + 1000])
        for d in load_corpus().documents
    ]
    return Corpus(docs, name="tiny", val_fraction=0.1, chunk_chars=512)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus, tmp_path_factory):
    """300-token byte-level BPE trained on ``tiny_corpus`` (a Hugging Face tokenizer)."""
    from capgap.data import get_tokenizer

    return get_tokenizer(tiny_corpus, 300, cache=tmp_path_factory.mktemp("tiny-data-cache"))


@pytest.fixture(scope="session")
def tiny_token_store(tiny_corpus, tiny_tokenizer, tmp_path_factory):
    """``tiny_corpus`` packed with ``tiny_tokenizer``: ``.train`` / ``.val`` uint16 memmaps."""
    from capgap.data import TokenStore

    cache = tmp_path_factory.mktemp("tiny-token-cache")
    return TokenStore.build_or_load(tiny_corpus, tiny_tokenizer, cache=cache)
