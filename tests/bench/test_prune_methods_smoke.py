"""bench/prune_methods.py end to end on a tiny random LLaMA: every method, heal, matched sizes, resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from capgap.models.arch import ParamTable, adapter_for
from tests.bench.conftest import load_bench


@pytest.fixture(scope="module")
def pm():
    return load_bench("prune_methods")


def _tiny(tmp_path: Path, tiny_corpus, tiny_tokenizer) -> tuple[LlamaForCausalLM, list[str]]:  # noqa: ANN001
    """A 4-layer GQA LLaMA saved with the tiny tokenizer, and the flags every run shares."""
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d.text}) + "\n" for d in tiny_corpus.documents))
    cfg = LlamaConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4,
                      intermediate_size=128, vocab_size=len(tiny_tokenizer), max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=tiny_tokenizer.eos_token_id,
                      eos_token_id=tiny_tokenizer.eos_token_id)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path / "model")
    tiny_tokenizer.save_pretrained(tmp_path / "model")
    return model, ["--model", str(tmp_path / "model"), "--corpus", str(corpus), "--seq-len", "32",
                   "--calib-tokens", "128", "--calib-batch-size", "2", "--eval-bytes", "1500"]


def test_end_to_end_and_resume(pm, tiny_corpus, tiny_tokenizer, tmp_path, monkeypatch):  # noqa: ANN001
    model, common = _tiny(tmp_path, tiny_corpus, tiny_tokenizer)
    table = ParamTable.from_model(model, adapter_for(model))
    three = table.count(64, [4] * 3, [128] * 3).total  # block_influence keeps 3 of 4 layers below it
    out = tmp_path / "r.json"
    argv = [*common, "--targets", f"{three + 100},{three - 100}", "--width-vs-depth", "expressiveness",
            "--heal-tokens", "64", "--heal-seq-len", "16", "--heal-batch-size", "2", "--suite", "",
            "--out", str(out)]
    monkeypatch.setenv("CAPGAP_THREADS", "1")
    monkeypatch.setenv("CAPGAP_NO_PROGRESS", "1")
    assert pm.main(argv) == 0
    res = json.loads(out.read_text())
    rows = {r["key"]: r for r in res["rows"]}
    assert len(rows) == 1 + 2 * (6 + 1) * 2  # teacher; per target 6 methods + 1 matched, each healed or not
    assert res["model"]["params"] == sum(p.numel() for p in model.parameters())
    for r in rows.values():
        assert r["val_loss"] > 0 and r["tasks"] == {}
        if r["method"] != "none":
            assert r["calibration_tokens"] == (0 if r["method"] in ("magnitude", "random") else 128)
            assert r["score_seconds"] >= 0 and r["prune_seconds"] >= 0
            assert abs(r["params"] - (r["matched_params"] or r["target_params"])) <= 0.01 * r["target_params"] \
                or r["method"] == "block_influence"
        if r["heal_tokens"]:
            assert r["heal_steps"] == 2 and r["heal_seconds"] > 0
    bi = [r for r in rows.values() if r["method"] == "block_influence"]
    assert sorted({r["layers_kept"] for r in bi}) == [2, 3] and all(r["hidden_kept"] == 64 for r in bi)
    assert {c["question"] for c in res["comparisons"]} == {"healed width vs block_influence alone",
                                                          "width vs depth, both healed"}
    assert len(res["comparisons"]) == 4 and all(c["se"] is not None for c in res["comparisons"])
    assert out.with_suffix(".png").stat().st_size > 0
    assert set(res["ranking"]) == {f"{t}+heal{h}" for t in (three + 100, three - 100) for h in (0, 64)}
    for ranked in res["ranking"].values():
        assert len(ranked) == 6 and ranked[0]["delta_val_loss"] == 0
        assert [r["val_loss"] for r in ranked] == sorted(r["val_loss"] for r in ranked)
        for r in ranked[1:]:
            assert r["delta_val_loss"] == pytest.approx(r["val_loss"] - ranked[0]["val_loss"], abs=2e-6)
            assert r["se"] >= 0 and r["windows"] == len(next(iter(rows.values()))["val_window_loss"])
    table = out.with_suffix(".md").read_text()
    assert table.count("| block_influence |") == 2 and "0 (best)" in table
    assert table.count("width vs depth, both healed") == 2
    out.with_suffix(".md").unlink()
    assert pm.main(["--views", "--out", str(out)]) == 0 and out.with_suffix(".md").read_text() == table

    assert pm.main(argv) == 2  # exists without --resume
    gone = res["rows"].pop(5)
    out.write_text(json.dumps(res))
    calls = []
    real = pm.measure
    monkeypatch.setattr(pm, "measure", lambda *a: calls.append(1) or real(*a))
    assert pm.main([*argv, "--resume"]) == 0
    assert len(calls) == 1  # only the dropped row ran again
    again = {r["key"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(again) == set(rows)
    assert again[gone["key"]]["val_loss"] == pytest.approx(gone["val_loss"], abs=1e-5)


def test_offline_lm_eval_tasks_are_measured(pm, tiny_corpus, tiny_tokenizer, tmp_path, monkeypatch):  # noqa: ANN001
    _, common = _tiny(tmp_path, tiny_corpus, tiny_tokenizer)
    out = tmp_path / "t.json"
    monkeypatch.setenv("CAPGAP_THREADS", "1")
    assert pm.main([*common, "--targets", "120000", "--methods", "block_influence", "--width-vs-depth", "",
                    "--heal-tokens", "0", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["method"] for r in rows] == ["none", "block_influence"]
    for r in rows:
        assert set(r["tasks"]) == {"capgap_quotes", "capgap_kjv_ppl"}
        assert 0 <= r["tasks"]["capgap_quotes"] <= 1 and r["tasks"]["capgap_kjv_ppl"] > 0
        assert r["tasks_stderr"]["capgap_quotes"] > 0
