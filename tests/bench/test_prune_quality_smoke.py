"""bench/prune_quality.py end to end on a tiny random LLaMA: fairness of kept counts, resume."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from tests.bench.conftest import load_bench


@pytest.fixture(scope="module")
def pq():
    return load_bench("prune_quality")


def tiny_llama(vocab: int, eos: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                      intermediate_size=64, vocab_size=vocab, max_position_embeddings=128,
                      tie_word_embeddings=True, bos_token_id=eos, eos_token_id=eos)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def test_matched_scores_give_reference_counts_and_baseline_order(pq):
    from capgap.prune import baseline_scores

    model = tiny_llama(64, 0)
    ref, base = (baseline_scores(model, "random", seed=s) for s in (0, 1))
    matched = pq.matched_scores(base, ref)
    for sparsity in (0.2, 0.5):
        assert pq.unmatched_counts(model, matched, sparsity, "global") == pq.unmatched_counts(model, ref, sparsity, "global")
    for name in ("heads", "neurons"):  # within each layer, the baseline decides which units rank first
        got, want = getattr(matched, name), getattr(base, name)
        assert torch.equal(got.argsort(dim=1, descending=True, stable=True), want.argsort(dim=1, descending=True, stable=True))


def test_end_to_end_and_resume(pq, tiny_corpus, tiny_tokenizer, tmp_path, monkeypatch):
    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text("".join(json.dumps({"text": d.text}) + "\n" for d in tiny_corpus.documents))
    model_dir = tmp_path / "model"
    tiny_llama(len(tiny_tokenizer), tiny_tokenizer.eos_token_id).save_pretrained(model_dir)
    tiny_tokenizer.save_pretrained(model_dir)
    out = tmp_path / "r.json"
    argv = ["--model", str(model_dir), "--corpus", str(corpus), "--sparsities", "0,0.4", "--random-seeds", "2",
            "--seq-len", "32", "--calib-tokens", "128", "--calib-batch-size", "2", "--eval-bytes", "1500",
            "--recovery-tokens", "128", "--recovery-seq-len", "32", "--recovery-batch-size", "2",
            "--methods", "expressiveness,magnitude,random,expressiveness+magnitude_hidden", "--out", str(out)]
    monkeypatch.setenv("CAPGAP_THREADS", "1")
    assert pq.main(argv) == 0
    res = json.loads(out.read_text())
    want = {"dense@0", "expressiveness@0.4", "magnitude@0.4", "random@0.4#0", "random@0.4#1",
            "expressiveness+magnitude_hidden@0.4"}
    assert set(res["rows"]) == want
    for row in res["rows"].values():
        assert row["recovery"]["steps"] == 2 and row["recovered"]["ppl"] > 0
    assert len({res["rows"][k]["params"] for k in want - {"dense@0"}}) == 1  # same kept size for all
    assert set(res["verdict"]["0.4"]) == {"oneshot", "recovered"}

    assert pq.main(argv) == 2  # exists without --resume
    dropped = res["rows"].pop("random@0.4#1")
    out.write_text(json.dumps(res))
    ran = []
    real = pq.run_row
    monkeypatch.setattr(pq, "run_row", lambda *a: ran.append(a[:3]) or real(*a))
    assert pq.main([*argv, "--resume"]) == 0
    assert ran == [("random", 0.4, 1)]
    again = json.loads(out.read_text())["rows"]
    assert set(again) == want
    for stage in ("oneshot", "recovered"):  # a rerun row reproduces its first run (replayed teacher too)
        assert again["random@0.4#1"][stage]["loss"] == dropped[stage]["loss"]
