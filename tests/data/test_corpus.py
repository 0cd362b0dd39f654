"""Corpus loading and the deterministic train/validation split."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from capgap.data import Corpus, Document, load_corpus, validation_text
from capgap.data.corpus import MIN_CORPUS_BYTES, chunk_ends
from capgap.errors import CapgapError

PARAGRAPH = "Speak the speech, I pray you, as I pronounced it to you, trippingly on the tongue."


def _docs(n: int = 40, paragraphs: int = 12) -> list[Document]:
    """Distinct synthetic documents of ~1 KB paragraphs (n * paragraphs KB in total)."""
    return [
        Document(f"doc{i}", "\n\n".join(f"[{i}.{j}] " + PARAGRAPH * 12 for j in range(paragraphs)))
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def default_corpus() -> Corpus:
    return load_corpus()


def test_default_corpus_is_real_text_of_the_promised_size(default_corpus):
    assert default_corpus.num_bytes >= 5_000_000
    assert 150_000 <= default_corpus.val_bytes <= 300_000
    assert {d.id.split("/")[0] for d in default_corpus.documents} == {
        "shakespeare",
        "milton",
        "kjv",
    }
    assert default_corpus.train_bytes + default_corpus.val_bytes <= default_corpus.num_bytes
    assert "To be, or not to be" in "".join(d.text for d in default_corpus.documents)


def test_validation_prefix_samples_every_source(default_corpus):
    # Validation runs are in hash order, so even 50 KB is not all from one source.
    head = validation_text(default_corpus, 50_000)
    texts = default_corpus.val_texts()
    used = texts[: next(i for i, t in enumerate(texts) if t not in head)]
    sources = {d.id.split("/")[0] for d in default_corpus.documents for t in used if t in d.text}
    assert len(sources) >= 2


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet=" ab\n", max_size=3000), size=st.integers(1, 300))
def test_chunks_tile_the_text_exactly(text, size):
    ends = chunk_ends(text, size)
    starts = [0, *ends][:-1]
    assert "".join(text[a:b] for a, b in zip(starts, ends, strict=True)) == text
    assert all(b - a <= 4 * size for a, b in zip(starts, ends, strict=True))


def test_split_is_disjoint_and_covers_the_text():
    corpus = Corpus(_docs(), val_fraction=0.1)
    train, val = corpus.train_texts(), corpus.val_texts()
    assert train and val
    assert not any(v in t for v in val for t in train)
    # Every paragraph of every document lands on exactly one side.
    for doc in corpus.documents:
        for para in doc.text.split("\n\n"):
            hits = sum(para in t for t in train) + sum(para in v for v in val)
            assert hits == 1, para[:20]
    assert 0.03 < corpus.val_bytes / corpus.num_bytes < 0.25


def test_split_ignores_document_order():
    docs = _docs()
    a, b = Corpus(docs, val_fraction=0.1), Corpus(docs[::-1], val_fraction=0.1)
    assert sorted(a.train_texts()) == sorted(b.train_texts())
    assert sorted(a.val_texts()) == sorted(b.val_texts())


def test_split_is_independent_of_python_hash_seed(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text("".join(json.dumps({"text": d.text}) + "\n" for d in _docs()))
    code = (
        "import sys, hashlib; from capgap.data import load_corpus, validation_text;"
        "c = load_corpus(sys.argv[1]);"
        "print(c.fingerprint(), hashlib.sha256(validation_text(c).encode()).hexdigest())"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code, str(path)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outputs) == 1


def test_fingerprint_tracks_content_and_settings():
    docs = _docs()
    base = Corpus(docs).fingerprint()
    assert Corpus(list(docs)).fingerprint() == base
    assert Corpus(docs, val_fraction=0.05).fingerprint() != base
    edited = [Document(docs[0].id, docs[0].text + "!"), *docs[1:]]
    assert Corpus(edited).fingerprint() != base


def test_tiny_corpus_still_gets_a_validation_piece():
    # With a near-zero fraction no hash falls below it; the lowest-hash piece is used.
    corpus = Corpus(_docs(n=3), val_fraction=1e-9)
    assert len(corpus.val_texts()) == 1


def test_validation_text_is_a_byte_bounded_prefix():
    docs = [
        Document(f"d{i}", "\n\n".join("naïve café ☕ " * 30 for _ in range(8))) for i in range(12)
    ]
    corpus = Corpus(docs, val_fraction=0.2, chunk_chars=256)
    full = validation_text(corpus)
    for limit in (1, 7, 100, 1001):
        head = validation_text(corpus, limit)
        assert full.startswith(head)
        assert limit - 4 < len(head.encode()) <= limit
    assert validation_text(corpus, 10**9) == full


@pytest.mark.parametrize(
    "docs",
    [[], [Document("a", "   \n")], [Document("a", "x" * (MIN_CORPUS_BYTES - 1))]],
)
def test_too_small_corpus_is_a_one_line_error(docs):
    with pytest.raises(CapgapError, match="at least") as e:
        Corpus(docs)
    assert "\n" not in str(e.value)


def test_corpus_with_a_single_piece_cannot_be_split():
    with pytest.raises(CapgapError, match="too small to split"):
        Corpus([Document("a", "word " * 4000)], chunk_chars=100_000)


def test_duplicate_ids_are_rejected():
    docs = _docs(n=20)
    with pytest.raises(CapgapError, match="duplicate document id 'doc0'"):
        Corpus([*docs, docs[0]])


def test_jsonl_source_with_custom_field(tmp_path):
    rows = [{"content": d.text, "meta": 1} for d in _docs(n=15)] + [{"content": ""}]
    path = tmp_path / "web.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    corpus = load_corpus(path, text_field="content")
    assert [d.id for d in corpus.documents] == [f"web.jsonl:{i}" for i in range(1, 16)]
    assert corpus.documents[3].text == rows[3]["content"]
    with pytest.raises(CapgapError, match="no string field 'text'"):
        load_corpus(path)


def test_bad_json_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"text": "ok"}) + "\n{oops\n")
    with pytest.raises(CapgapError, match=r"bad.jsonl:2: invalid JSON"):
        load_corpus(path)


def _write_folder(root: Path, docs: list[Document], reverse: bool) -> None:
    """Same files, created in either order (the split must not depend on it)."""
    files = {
        "a.txt": docs[0].text,
        "sub/b.jsonl": "".join(json.dumps({"text": d.text}) + "\n" for d in docs[1:4]),
        "c.txt.gz": docs[4].text,
        "notes.md": "ignored",
    }
    for name in sorted(files, reverse=reverse):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        data = files[name].encode()
        path.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)


def test_folder_source_is_sorted_recursive_and_order_free(tmp_path):
    docs = _docs(n=5, paragraphs=4)
    _write_folder(tmp_path / "x", docs, reverse=False)
    _write_folder(tmp_path / "y", docs, reverse=True)
    x, y = load_corpus(tmp_path / "x"), load_corpus(tmp_path / "y")
    assert [d.id for d in x.documents] == [
        "a.txt",
        "c.txt.gz",
        "sub/b.jsonl:1",
        "sub/b.jsonl:2",
        "sub/b.jsonl:3",
    ]
    assert x.documents[1].text == docs[4].text
    assert x.fingerprint() == y.fingerprint()
    assert x.val_texts() == y.val_texts()


def test_txt_file_source(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(_docs(n=1, paragraphs=30)[0].text)
    corpus = load_corpus(str(path))
    assert [d.id for d in corpus.documents] == ["play.txt"]


@pytest.mark.parametrize("name", ["missing", "table.csv"])
def test_unknown_sources_are_errors(tmp_path, name):
    (tmp_path / "table.csv").write_text("a,b\n")
    with pytest.raises(CapgapError, match="hf:NAME"):
        load_corpus(tmp_path / name)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(CapgapError, match="no .txt or .jsonl files"):
        load_corpus(tmp_path)


def test_hf_source_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(CapgapError, match=r"pip install 'capgap\[data\]'"):
        load_corpus("hf:wikitext:wikitext-2-raw-v1@train")


class _FakeDataset:
    column_names = ["text", "label"]

    def __getitem__(self, column: str) -> list[str]:
        return [d.text for d in _docs(n=5)] + [""]


def test_hf_source_parses_name_config_and_split(monkeypatch):
    calls = []
    fake = type(sys)("datasets")
    fake.load_dataset = lambda *a, **k: calls.append((a, k)) or _FakeDataset()
    monkeypatch.setitem(sys.modules, "datasets", fake)
    corpus = load_corpus("hf:org/wiki:raw-v1@validation")
    assert calls == [(("org/wiki", "raw-v1"), {"split": "validation"})]
    assert [d.id for d in corpus.documents][:2] == [
        "org/wiki@validation:0",
        "org/wiki@validation:1",
    ]
    load_corpus("hf:org/wiki")
    assert calls[-1] == (("org/wiki", None), {"split": "train"})
    with pytest.raises(CapgapError, match=r"no column 'body' \(columns: \['text', 'label'\]\)"):
        load_corpus("hf:org/wiki", text_field="body")
