"""Which regime a sweep measured in and what its answer rests on: the words capgap pilot
prints and the answer.json it writes."""

from __future__ import annotations

import json
import shutil

import pytest

from capgap.cli import main
from capgap.errors import CapgapError
from capgap.results.regime import (
    describe_answer,
    describe_regime,
    find_regime,
    read_regime,
    regime_line,
    regime_lines,
    teacher_losses,
)


def _teachers(tpp: float, emb: float, n: int = 7, step: float = 1.41) -> list[dict]:
    return [{"name": f"P{i}", "params": 2e5 * step**i, "tokens_per_param": tpp,
             "embedding_fraction": emb} for i in range(n)]


def test_trained_low_embedding_regime_is_named_so() -> None:
    r = describe_regime(_teachers(20.0, 0.2))
    assert r["name"] == "trained, low-embedding" and r["reasons"] == []
    assert r["span"] == pytest.approx(1.41**6) and r["max_step"] == pytest.approx(1.41)


def test_micro_regime_says_why() -> None:
    r = describe_regime(_teachers(0.5, 0.8, n=5, step=1.8))
    assert r["name"] == "micro"
    assert any("under-trained" in x for x in r["reasons"])
    assert any("embedding-heavy" in x for x in r["reasons"])
    assert describe_regime([])["name"] == "given models"


def test_answer_separates_interior_from_censored() -> None:
    law = {"status": "insufficient", "sizes": [
        {"label": "300000", "optimum": 6e5, "ratio": 2.0, "censored": True, "censored_edge": "low"},
        {"label": "500000", "optimum": 1.1e6, "ratio": 2.2, "censored": False}]}
    a = describe_answer(law)
    assert (a["kind"], a["interior"], a["censored"]) == ("mixed", 1, 1)
    lines = regime_lines(describe_regime(_teachers(20.0, 0.2)), a)
    assert lines[0].startswith("regime: trained, low-embedding - 7 teachers")
    assert ", 20 tokens/param, embeddings 20%" in lines[0]  # one value, not "20-20"
    spread = regime_line(describe_regime(_teachers(20.0, 0.2)[:6] + _teachers(25.0, 0.1)[6:]))
    assert "20-25 tokens/param, embeddings 10%-20%" in spread
    assert "interior optimum at 1 of 2 student sizes: 500000 (T*/S 2.20)" in lines[1]
    assert "censored: 300000 (low edge)" in lines[1]
    assert describe_answer(None)["kind"] == "no optimum"


@pytest.mark.slow
def test_pilot_states_its_regime_and_answer(finished_sweep, sweep_root, tmp_path, capsys) -> None:
    folder, _ = finished_sweep
    out = tmp_path / "pilot"
    shutil.copytree(folder, out, symlinks=True)
    assert main(["pilot", "--config", str(sweep_root / "sweep.yaml"), "--out", str(out),
                 "--no-progress"]) == 0
    text = capsys.readouterr().out
    assert "regime: micro" in text and "under-trained" in text and "answer: " in text
    saved = json.loads((out / "answer.json").read_text())
    assert saved["regime"]["name"] == "micro" and saved["answer"]["law"]


def test_one_reader_finds_the_regime_from_file_family_or_sweep(tmp_path) -> None:
    rows = [{"name": "A", "params": 1000, "val_loss": 3.5, "tokens_per_param": 20,
             "embedding_fraction": 0.1},
            {"name": "B", "params": 2000, "val_loss": 3.1, "tokens_per_param": 20,
             "embedding_fraction": 0.1}]
    family = tmp_path / "sweep" / "teachers"
    family.mkdir(parents=True)
    (family / "regime.json").write_text(json.dumps({"teachers": rows}))
    for where in (family / "regime.json", family, tmp_path / "sweep"):
        assert find_regime(where) == family / "regime.json"
        assert read_regime(where) == rows
        assert teacher_losses(where) == ({"A": 3.5, "B": 3.1}, {"A": 1000.0, "B": 2000.0})
    assert find_regime(tmp_path) is None and read_regime(tmp_path) == []
    with pytest.raises(CapgapError, match="no regime.json"):
        teacher_losses(tmp_path)
    (family / "regime.json").write_text(json.dumps({"teachers": [{"name": "A"}]}))
    with pytest.raises(CapgapError, match="not a regime file"):
        teacher_losses(family)
    (family / "regime.json").write_text("{not json")
    with pytest.raises(CapgapError, match="not a regime file"):
        read_regime(family)
