"""``capgap data prepare``."""

from __future__ import annotations

import json

from transformers import AutoTokenizer

from capgap.cli import main


def _write_corpus(folder, corpus) -> None:
    folder.mkdir()
    for i, doc in enumerate(corpus.documents[:60]):
        (folder / f"{i:03d}.txt").write_text(doc.text)


def test_prepare_trains_tokenises_and_reports(tiny_corpus, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAPGAP_CACHE", str(tmp_path / "cache"))
    _write_corpus(tmp_path / "texts", tiny_corpus)
    argv = ["data", "prepare", "--corpus", str(tmp_path / "texts"), "--vocab-size", "280"]
    assert main([*argv, "--json", "--out", str(tmp_path / "out")]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["corpus"]["documents"] == 60
    assert summary["tokenizer"]["vocab_size"] == summary["tokens"]["vocab_size"] == 280
    assert summary["tokens"]["path"].startswith(str(tmp_path / "cache"))
    assert summary["tokens"]["train_tokens"] > summary["tokens"]["val_tokens"] > 0
    assert json.loads((tmp_path / "out" / "data.json").read_text()) == summary
    assert len(AutoTokenizer.from_pretrained(str(tmp_path / "out" / "tokenizer"))) == 280

    assert main(argv) == 0  # second run: everything from the cache, human-readable summary
    out = capsys.readouterr().out
    assert "60 documents" in out and summary["tokens"]["path"] in out


def test_prepare_with_an_existing_tokenizer(
    tiny_corpus, tiny_tokenizer, tmp_path, monkeypatch, capsys
):
    monkeypatch.setenv("CAPGAP_CACHE", str(tmp_path / "cache"))
    _write_corpus(tmp_path / "texts", tiny_corpus)
    argv = ["data", "prepare", "--corpus", str(tmp_path / "texts"), "--json"]
    assert main([*argv, "--tokenizer", tiny_tokenizer.name_or_path]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["tokenizer"]["path"] == tiny_tokenizer.name_or_path
    assert not (tmp_path / "cache" / "tokenizers").exists()


def test_bad_corpus_is_a_one_line_error(tmp_path, capsys):
    assert main(["data", "prepare", "--corpus", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capgap data: error: corpus source") and err.count("\n") == 1
