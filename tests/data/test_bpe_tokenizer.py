"""Byte-level BPE training, caching and Hugging Face compatibility."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

import capgap.data.tokenizer as tokenizer_mod
from capgap.data import EOS_TOKEN, get_tokenizer, tokenizer_hash, train_bpe, validation_text
from capgap.data.tokenizer import tokenizer_path
from capgap.errors import CapgapError


def test_special_tokens_and_size(tiny_tokenizer):
    assert len(tiny_tokenizer) == 300
    assert tiny_tokenizer.eos_token == tiny_tokenizer.bos_token == tiny_tokenizer.pad_token
    assert tiny_tokenizer.eos_token == EOS_TOKEN
    assert tiny_tokenizer.eos_token_id == 0


@pytest.mark.parametrize(
    "text",
    ["", "plain text", "naïve café — “quotes”, 日本語, emoji 🤖\n\ttabs  and\r\nCRLF", "\x00\x7f"],
)
def test_round_trip_is_exact_for_any_string(tiny_tokenizer, text):
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text


def test_round_trip_on_validation_text(tiny_corpus, tiny_tokenizer):
    text = validation_text(tiny_corpus)
    ids = tiny_tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tiny_tokenizer.decode(ids) == text
    assert len(ids) < len(text.encode())  # merges were learned and used


def test_no_special_tokens_are_added_by_default(tiny_tokenizer):
    ids = tiny_tokenizer("hello")["input_ids"]
    assert tiny_tokenizer.eos_token_id not in ids


def test_auto_tokenizer_loads_the_cached_folder_offline(tiny_corpus, tiny_tokenizer):
    folder = tiny_tokenizer.name_or_path
    loaded = AutoTokenizer.from_pretrained(folder, local_files_only=True)
    text = validation_text(tiny_corpus, 2000)
    assert loaded(text)["input_ids"] == tiny_tokenizer(text)["input_ids"]
    assert loaded.eos_token == EOS_TOKEN
    assert Path(folder).name.startswith("bpe300-")
    info = json.loads((Path(folder) / "capgap_tokenizer.json").read_text())
    assert info["corpus"]["fingerprint"] == tiny_corpus.fingerprint()


def test_training_is_deterministic(tiny_corpus):
    texts = tiny_corpus.train_texts()
    a = train_bpe(texts, 300).backend_tokenizer.to_str()
    b = train_bpe(texts, 300).backend_tokenizer.to_str()
    assert a == b


def test_trains_once_then_loads_from_cache(tiny_corpus, tmp_path, monkeypatch):
    calls = []
    real = tokenizer_mod.train_bpe
    monkeypatch.setattr(tokenizer_mod, "train_bpe", lambda *a: calls.append(a) or real(*a))
    first = get_tokenizer(tiny_corpus, 280, cache=tmp_path)
    second = get_tokenizer(tiny_corpus, 280, cache=tmp_path)
    assert len(calls) == 1
    assert (
        first.name_or_path == second.name_or_path == str(tokenizer_path(tiny_corpus, 280, tmp_path))
    )
    assert tokenizer_hash(first) == tokenizer_hash(second)
    assert [p.name for p in tmp_path.joinpath("tokenizers").iterdir()] == [
        tokenizer_path(tiny_corpus, 280, tmp_path).name
    ]  # no temporary folders left behind


def test_hash_distinguishes_tokenizers(tiny_corpus, tiny_tokenizer, tmp_path):
    other = get_tokenizer(tiny_corpus, 290, cache=tmp_path)
    assert tokenizer_hash(other) != tokenizer_hash(tiny_tokenizer)


def test_vocab_smaller_than_bytes_is_an_error(tiny_corpus):
    with pytest.raises(CapgapError, match="at least 257"):
        train_bpe(tiny_corpus.train_texts(), 100)
