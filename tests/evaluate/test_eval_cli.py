"""`capgap eval` without --tasks: held-out scores, JSON keys unchanged; flag errors."""

from __future__ import annotations

import json

from capgap.cli import main


def test_heldout_default_keeps_its_json_keys(tiny_lm_dir, tmp_path, capsys):
    out = tmp_path / "h.json"
    assert main(["eval", str(tiny_lm_dir), "--max-bytes", "2000", "--json", "--out", str(out)]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"loss", "ppl", "bpb", "tokens"} <= set(res)
    assert json.loads(out.read_text()) == res


def test_compare_needs_results_files(tmp_path, capsys):
    bad = tmp_path / "x.json"
    bad.write_text(json.dumps({"loss": 1.0}))
    assert main(["eval", "--compare", str(bad)]) == 2
    assert "not a `capgap eval --tasks" in capsys.readouterr().err
    assert main(["eval"]) == 2
