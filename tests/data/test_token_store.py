"""Packing a corpus into cached token streams."""

from __future__ import annotations

import numpy as np
import pytest
from tokenizers import processors
from transformers import PreTrainedTokenizerFast

import capgap.data.tokens as tokens_mod
from capgap.data import Corpus, Document, TokenStore
from capgap.data.tokens import stream_dtype
from capgap.errors import CapgapError


def _decode_docs(stream: np.ndarray, tokenizer) -> list[str]:
    eos = tokenizer.eos_token_id
    cuts = np.flatnonzero(stream == eos)
    starts = [0, *(cuts[:-1] + 1)]
    return [tokenizer.decode(stream[a:b].tolist()) for a, b in zip(starts, cuts, strict=True)]


def test_streams_decode_to_the_split_joined_by_eos(tiny_corpus, tiny_tokenizer, tiny_token_store):
    store = tiny_token_store
    assert store.train[-1] == store.val[-1] == tiny_tokenizer.eos_token_id == store.eos_id
    assert _decode_docs(np.asarray(store.train), tiny_tokenizer) == tiny_corpus.train_texts()
    assert _decode_docs(np.asarray(store.val), tiny_tokenizer) == tiny_corpus.val_texts()


def test_meta_and_dtype(tiny_corpus, tiny_tokenizer, tiny_token_store):
    store = tiny_token_store
    assert store.train.dtype == store.val.dtype == np.uint16
    assert store.vocab_size == 300
    assert store.meta["corpus_fingerprint"] == tiny_corpus.fingerprint()
    assert store.meta["train_tokens"] == len(store.train) > len(store.val) > 0
    assert int(store.train.max()) < store.vocab_size
    with pytest.raises(ValueError):  # read-only: a training bug cannot corrupt the cache
        store.train[0] = 1


@pytest.mark.parametrize(
    ("vocab", "dtype"),
    [
        (300, np.uint16),
        (50257, np.uint16),
        (65536, np.uint16),
        (65537, np.uint32),
        (151_936, np.uint32),
    ],
)
def test_dtype_choice(vocab, dtype):
    assert stream_dtype(vocab) == dtype


def test_second_build_reuses_the_cache(tiny_corpus, tiny_tokenizer, tmp_path, monkeypatch):
    calls = []
    real = tokens_mod._write_stream
    monkeypatch.setattr(
        tokens_mod, "_write_stream", lambda *a, **k: calls.append(k["desc"]) or real(*a, **k)
    )
    first = TokenStore.build_or_load(tiny_corpus, tiny_tokenizer, cache=tmp_path)
    assert calls == ["train", "val"]
    second = TokenStore.build_or_load(tiny_corpus, tiny_tokenizer, cache=tmp_path)
    assert calls == ["train", "val"]  # nothing tokenised the second time
    assert second.path == first.path
    np.testing.assert_array_equal(second.train, first.train)
    assert TokenStore.load(first.path).meta == first.meta


def test_cache_key_follows_the_corpus(tiny_corpus, tiny_tokenizer, tmp_path):
    other = Corpus(tiny_corpus.documents, val_fraction=0.2, chunk_chars=512)
    a = TokenStore.build_or_load(tiny_corpus, tiny_tokenizer, cache=tmp_path)
    b = TokenStore.build_or_load(other, tiny_tokenizer, cache=tmp_path)
    assert a.path != b.path
    assert len(b.val) > len(a.val)


def test_literal_eos_text_is_not_a_document_break(tiny_tokenizer, tmp_path):
    text = "a <|endoftext|> b. " * 1000
    corpus = Corpus([Document(f"d{i}", text) for i in range(3)], chunk_chars=4000)
    store = TokenStore.build_or_load(corpus, tiny_tokenizer, cache=tmp_path)
    eos_count = int((np.asarray(store.train) == store.eos_id).sum())
    assert eos_count == len(corpus.train_texts())


def _bos_adding_copy(tokenizer) -> PreTrainedTokenizerFast:
    """The same BPE, wrapped like a Llama tokenizer: a BOS token added on encode."""
    backend = type(tokenizer.backend_tokenizer).from_str(tokenizer.backend_tokenizer.to_str())
    backend.add_special_tokens(["<s>"])
    bos = backend.token_to_id("<s>")
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", special_tokens=[("<s>", bos)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token=tokenizer.eos_token
    )


def test_any_hf_tokenizer_packs_without_its_bos(
    tiny_corpus, tiny_tokenizer, tiny_token_store, tmp_path
):
    llama_like = _bos_adding_copy(tiny_tokenizer)
    assert llama_like("hi")["input_ids"][0] == llama_like.bos_token_id
    store = TokenStore.build_or_load(tiny_corpus, llama_like, cache=tmp_path)
    assert store.vocab_size == 301
    assert store.path.name != tiny_token_store.path.name
    np.testing.assert_array_equal(store.train, tiny_token_store.train)


def test_tokenizer_without_eos_is_an_error(tiny_corpus, tiny_tokenizer, tmp_path):
    backend = type(tiny_tokenizer.backend_tokenizer).from_str(
        tiny_tokenizer.backend_tokenizer.to_str()
    )
    no_eos = PreTrainedTokenizerFast(tokenizer_object=backend)
    with pytest.raises(CapgapError, match="no EOS token"):
        TokenStore.build_or_load(tiny_corpus, no_eos, cache=tmp_path)
    assert not (tmp_path / "tokens").exists() or not any((tmp_path / "tokens").iterdir())


def test_loading_a_non_store_is_an_error(tmp_path):
    with pytest.raises(CapgapError, match="not a token store"):
        TokenStore.load(tmp_path)
