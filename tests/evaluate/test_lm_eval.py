"""lm-evaluation-harness path: bundled offline tasks on tiny models, results JSON, compare."""

from __future__ import annotations

import json
import math
import sys

import pytest

from capgap.cli import main
from capgap.errors import CapgapError

lm_eval = pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install 'capgap[eval]')")

from capgap.evaluate.lm_eval import evaluate_tasks  # noqa: E402


@pytest.fixture(scope="module")
def offline_result(tiny_lm):
    model, tok = tiny_lm
    return evaluate_tasks(model, tok, tasks=["capgap_offline"], batch_size=4)


def test_bundled_tasks_run_in_memory(offline_result):
    quotes = offline_result["results"]["capgap_quotes"]
    assert 0.0 <= quotes["acc,none"] <= 1.0
    # acc is a mean over 12 items: a multiple of 1/12
    assert math.isclose(quotes["acc,none"] * 12, round(quotes["acc,none"] * 12), abs_tol=1e-9)
    # the group aggregates nothing, so its members are the headline rows
    assert set(offline_result["headline"]) == {"capgap_quotes", "capgap_kjv_ppl"}
    assert offline_result["params"]["total"] > 0


def test_rolling_bpb_matches_heldout_scorer(offline_result, tiny_lm):
    """lm-eval's bits_per_byte equals capgap's held-out bpb over the same passages."""
    from capgap.evaluate.heldout import encode_text, score_ids
    from capgap.evaluate.tasks.capgap_quotes.data import load_passages

    model, tok = tiny_lm
    nats = n_bytes = 0
    for text in load_passages()["test"]["text"]:
        ids, b = encode_text(tok, text)
        nats += score_ids(model, ids, seq_len=256)[0]
        n_bytes += b
    got = offline_result["results"]["capgap_kjv_ppl"]["bits_per_byte,none"]
    assert got == pytest.approx(nats / math.log(2) / n_bytes, rel=1e-4)


def test_global_pruned_model_in_memory(tiny_lm):
    """A global-allocation pruned model (per-layer shapes) evaluates without a save."""
    import torch

    from capgap.prune import prune, score

    model, tok = tiny_lm
    g = torch.Generator().manual_seed(0)
    calib = [torch.randint(0, len(tok), (2, 16), generator=g) for _ in range(2)]
    small = prune(model, score(model, calib), sparsity=0.4, allocation="global").model
    res = evaluate_tasks(small, tok, tasks=["capgap_quotes"], limit=4, batch_size=4)
    assert res["results"]["capgap_quotes"]["acc,none"] in {0.0, 0.25, 0.5, 0.75, 1.0}
    assert res["params"]["total"] < sum(p.numel() for p in model.parameters())


def test_cli_json_out_and_compare(tiny_lm_dir, tmp_path, capsys):
    out = tmp_path / "a.json"
    assert main(["eval", str(tiny_lm_dir), "--tasks", "capgap_quotes", "--limit", "3",
                 "--batch-size", "4", "--out", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed == saved and saved["limit"] == 3
    assert saved["n_shot"]["capgap_quotes"] == 0
    other = tmp_path / "b.json"
    other.write_text(json.dumps(saved | {"model": "other/model"}))
    assert main(["eval", "--compare", str(out), str(other)]) == 0
    text = capsys.readouterr().out
    header = text.splitlines()[0]
    assert "tiny" in header and "model" in header and "capgap_quotes" in text


def test_missing_lm_eval_is_a_one_line_error(monkeypatch, tiny_lm):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # import now raises ImportError
    with pytest.raises(CapgapError, match=r"pip install 'capgap\[eval\]'"):
        evaluate_tasks(*tiny_lm, tasks=["capgap_quotes"])
