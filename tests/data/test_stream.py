"""Streamed token stores: shares follow the weights, the split is Corpus's split, sources are
read lazily (an endless hf: source finishes), seeds fix the order, a short source stops the
mixture with its shares intact, and a distillation run reads the store as tokens:PATH."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from capgap.cli import main
from capgap.data import PackedLoader, TokenStore, load_corpus
from capgap.data.stream import (
    TOKENS_PREFIX,
    VAL_TEXT,
    StreamSource,
    iter_documents,
    shuffled,
    stream_store,
)
from capgap.errors import CapgapError


@pytest.fixture(scope="module")
def sources(tiny_corpus, tmp_path_factory):
    """'lower' (~110 KB, a folder of .txt files) and 'upper' (~55 KB, a JSONL)."""
    root = tmp_path_factory.mktemp("stream")
    docs = [d.text for d in tiny_corpus.documents]
    (root / "lower").mkdir()
    for i, d in enumerate(docs):
        (root / "lower" / f"{i:03d}.txt").write_text(d.lower())
    with open(root / "upper.jsonl", "w") as f:
        for i, d in enumerate(docs[: len(docs) // 2]):
            f.write(json.dumps({"id": i, "text": d.upper()}) + "\n")
    return str(root / "lower"), str(root / "upper.jsonl")


def test_shares_follow_the_weights_and_the_store_loads(sources, tiny_tokenizer, tmp_path):
    path = stream_store([StreamSource(sources[0], 3), StreamSource(sources[1], 1)],
                        tiny_tokenizer, 30_000, shuffle_buffer=16, val_fraction=0.1,
                        cache=tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    assert [s["realised_share"] for s in meta["sources"]] == pytest.approx([0.75, 0.25],
                                                                            abs=0.02)
    assert 30_000 <= meta["train_tokens"] < 31_000 and not meta["limited_by_source"]
    store = TokenStore.load(path)
    assert store.train.size == meta["train_tokens"] and store.val.size == meta["val_tokens"] > 0
    loader = PackedLoader(store.train, seq_len=32, batch_size=8, seed=0)
    rows = np.concatenate([loader.batch(s).numpy() for s in range(40)])
    upper = [sum(c.isupper() for c in t) > sum(c.islower() for c in t)
             for t in tiny_tokenizer.batch_decode(rows)]
    assert np.mean(upper) == pytest.approx(0.25, abs=0.09)
    assert (path / VAL_TEXT).read_text().strip()
    again = stream_store([StreamSource(sources[0], 3), StreamSource(sources[1], 1)],
                         tiny_tokenizer, 30_000, shuffle_buffer=16, val_fraction=0.1,
                         cache=tmp_path)
    assert again == path  # content-addressed: found, not rebuilt


def test_the_split_is_the_corpus_split(sources, tiny_tokenizer, tmp_path):
    """Streaming a whole source holds out exactly the pieces Corpus holds out."""
    path = stream_store([StreamSource(sources[1])], tiny_tokenizer, 10**9, val_fraction=0.2,
                        cache=tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["limited_by_source"] and meta["sources"][0]["exhausted"]
    corpus = load_corpus(sources[1], val_fraction=0.2)
    streamed = set((path / VAL_TEXT).read_text().split("\n\n"))
    assert set("\n\n".join(corpus.val_texts()).split("\n\n")) == streamed
    assert meta["train_bytes"] + meta["val_bytes"] == pytest.approx(
        corpus.train_bytes + corpus.val_bytes, rel=0.01)


def test_seeded_order_and_a_short_source_keeps_the_shares(sources, tiny_tokenizer, tmp_path):
    def train(seed: int, cache: str) -> np.ndarray:
        p = stream_store([StreamSource(sources[0])], tiny_tokenizer, 5_000, seed=seed,
                         shuffle_buffer=4, val_fraction=0.5, cache=tmp_path / cache)
        return np.asarray(TokenStore.load(p).train)

    assert np.array_equal(train(0, "a"), train(0, "b"))
    assert not np.array_equal(train(0, "a")[:2000], train(1, "a")[:2000])
    path = stream_store([StreamSource(sources[0], 1), StreamSource(sources[1], 9)],
                        tiny_tokenizer, 200_000, val_fraction=0.1, cache=tmp_path)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["limited_by_source"] and meta["sources"][1]["exhausted"]
    assert meta["sources"][1]["realised_share"] == pytest.approx(0.9, abs=0.02)


def test_hf_sources_are_read_lazily(tiny_tokenizer, tmp_path, monkeypatch):
    """An endless streaming dataset still yields a finished store: nothing is read ahead."""
    datasets = pytest.importorskip("datasets")
    calls = {}

    def endless(name, config=None, split=None, streaming=False):
        calls.update(name=name, config=config, split=split, streaming=streaming)
        return ({"text": f"Document {i}. " + "word " * (i % 50 + 20)} for i in itertools.count())

    monkeypatch.setattr(datasets, "load_dataset", endless)
    path = stream_store([StreamSource("hf:someone/web:en@train")], tiny_tokenizer, 4_000,
                        shuffle_buffer=8, val_fraction=0.5, cache=tmp_path)
    assert calls == {"name": "someone/web", "config": "en", "split": "train", "streaming": True}
    assert json.loads((path / "meta.json").read_text())["train_tokens"] >= 4_000
    with pytest.raises(CapgapError, match="no string column 'body'"):
        next(iter_documents("hf:x", text_field="body"))


def test_shuffle_buffer_is_a_seeded_permutation():
    out = list(shuffled(iter(range(100)), 10, np.random.default_rng(0)))
    assert sorted(out) == list(range(100)) and out != list(range(100))
    assert out == list(shuffled(iter(range(100)), 10, np.random.default_rng(0)))


def test_distill_reads_a_streamed_store(sources, tiny_tokenizer, tmp_path):
    from capgap.distill.engine import distill
    from tests.distill.test_engine import cfg_for, save_tiny

    student = save_tiny(tmp_path / "student", tiny_tokenizer, 16, 1, 1)
    path = stream_store([StreamSource(sources[0])], tiny_tokenizer, 20_000, val_fraction=0.2,
                        cache=tmp_path)
    res = distill(cfg_for(None, student, TOKENS_PREFIX + str(path), alpha=1.0), tmp_path / "run")
    assert res.val_loss < 6.0
    other = tmp_path / "other-store"
    with pytest.raises(CapgapError, match="not a token store"):
        distill(cfg_for(None, student, TOKENS_PREFIX + str(other), alpha=1.0), tmp_path / "x")


def test_cli_streams_and_refuses_bad_input(sources, tiny_tokenizer, tmp_path, capsys):
    tok = tmp_path / "tok"
    tiny_tokenizer.save_pretrained(tok)
    out = tmp_path / "store"
    assert main(["data", "stream", "--source", f"{sources[0]}=3", "--source",
                 f"{sources[1]}=1", "--tokenizer", str(tok), "--tokens", "2e4",
                 "--val-fraction", "0.2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"tokens:{out}" in text and "asked 75.0 %" in text
    assert main(["data", "stream", "--source", f"{sources[0]}=x", "--tokenizer", str(tok),
                 "--tokens", "100"]) == 2
    assert "must be a number" in capsys.readouterr().err
    assert main(["data", "stream", "--source", str(tmp_path / "nope.txt"), "--tokenizer",
                 str(tok), "--tokens", "100"]) == 2
    assert "no such file" in capsys.readouterr().err
    assert main(["data", "stream", "--source", sources[1], "--tokenizer", str(tok),
                 "--tokens", "100", "--out", str(out)]) == 2  # another stream's folder
    assert "not this stream's store" in capsys.readouterr().err
