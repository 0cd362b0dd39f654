"""An adaptive sweep end to end: five teachers, of which it runs a subset chosen round by
round, says in adaptive.json and the log why it left the others out, and resumes from its
store.

The teachers are the tiny sweep's two trained ones (A, B) and three larger untrained ones
(C < D < E). A student pruned from an untrained teacher is itself untrained, its loss far
above (about ln 320 against the trained students' lower loss) the 3 x noise floor that
counts: the start round (A, C, E: ends and middle) finds C dominated, so B, inside the
bracket, runs next and D, beyond C from the best, is left out.
"""

from __future__ import annotations

import copy
import json
import shutil
import sqlite3
from pathlib import Path

import pytest
import torch

from capgap import config
from capgap.models import build_model, save_model
from capgap.models.anymodel import load_any_model
from capgap.results.adaptive import replay
from capgap.sweep import SweepConfig, read_rows, run_sweep

pytestmark = pytest.mark.slow

UNTRAINED = {"C": 64, "D": 80, "E": 96}  # hidden widths; A is 32 and B 48


def _untrained(like: str, out: Path, hidden: int) -> str:
    """A randomly initialised copy of the teacher ``like``, ``hidden`` wide."""
    model, tokenizer = load_any_model(like)
    cfg = copy.deepcopy(model.config)
    cfg.hidden_size, cfg.intermediate_size = hidden, 4 * hidden
    cfg.num_attention_heads = hidden // 16
    torch.manual_seed(hidden)
    save_model(build_model(cfg), tokenizer, out)
    return str(out)


@pytest.fixture(scope="module")
def adaptive_cfg(finished_sweep, sweep_root) -> SweepConfig:
    trained = sorted({r.teacher_path for r in read_rows(finished_sweep[0])})  # A, B
    root = sweep_root / "adaptive-teachers"
    models = trained + [_untrained(trained[0], root / n, h) for n, h in UNTRAINED.items()]
    text = "".join(f"teachers: {{models: [{', '.join(models)}]}}\n"
                   if line.startswith("teachers:") else line + "\n"
                   for line in (sweep_root / "sweep.yaml").read_text().splitlines())
    path = sweep_root / "adaptive.yaml"
    path.write_text(text + "adaptive: {enabled: true}\n")
    return config.load(SweepConfig, path)


@pytest.fixture(scope="module")
def adaptive_run(adaptive_cfg, sweep_root) -> tuple[Path, object]:
    out = sweep_root / "adaptive-run"
    return out, run_sweep(adaptive_cfg, out, workers=1, progress=False)


def _teachers_run(out: Path) -> set[str]:
    return {r.teacher for r in read_rows(out) if r.finished}


def test_runs_a_subset_and_says_why(adaptive_run):
    out, summary = adaptive_run
    assert summary.cells == 10 and summary.failed == 0  # 5 teachers x (distilled + baseline)
    assert summary.ran == 8 and summary.left_out == 2 and summary.skipped == 0
    assert _teachers_run(out) == {"A", "B", "C", "E"}
    state = json.loads((out / "adaptive.json").read_text())
    assert state["done"] and state["rule"]["enabled"] and state["rounds_this_run"] == 2
    (curve,) = state["curves"]
    assert curve["phase"] == "done" and curve["teachers"] == ["A", "B", "C", "D", "E"]
    assert curve["best"] in ("A", "B") and curve["bracket"][1] == "C"
    dropped = {d["teacher"]: d for d in curve["dropped"]}
    assert {"C", "D", "E"} <= set(dropped)
    assert dropped["C"]["measured"] and dropped["C"]["reason"].startswith("dominated")
    assert not dropped["D"]["measured"] and "beyond C" in dropped["D"]["reason"]
    # only the cells it ran are in the store; the law is fitted on them as on any sweep
    assert {r.status for r in read_rows(out)} == {"done"} and len(read_rows(out)) == 8
    assert (out / "law.json").is_file()


def test_a_rerun_runs_nothing_and_an_interrupted_one_finishes_the_same(adaptive_run,
                                                                       adaptive_cfg,
                                                                       sweep_root):
    out, _ = adaptive_run
    before = json.loads((out / "adaptive.json").read_text())
    again = run_sweep(adaptive_cfg, out, workers=1, progress=False)
    assert again.ran == 0 and again.skipped == 8 and again.left_out == 2
    # an interruption after the start round: B's cells never ran, and one of A's broke
    cut = sweep_root / "adaptive-cut"
    shutil.copytree(out, cut)
    rows = {r.key: r for r in read_rows(cut) if r.teacher == "B"}
    with sqlite3.connect(cut / "results.sqlite") as con:
        con.executemany("DELETE FROM cells WHERE key=?", [(k,) for k in rows])
    for key in rows:
        shutil.rmtree(cut / "cells" / key)
    broken = next(r.key for r in read_rows(cut) if r.teacher == "A" and r.distilled)
    (cut / "cells" / broken / "DONE.json").unlink()  # a row says done, its folder does not
    resumed = run_sweep(adaptive_cfg, cut, workers=1, progress=False)
    assert resumed.ran == 3 and resumed.skipped == 5 and resumed.left_out == 2
    after = json.loads((cut / "adaptive.json").read_text())
    assert after["curves"] == before["curves"]
    losses = {r.key: r.val_loss for r in read_rows(out)}
    assert {r.key: r.val_loss for r in read_rows(cut)} == losses


def test_the_full_grid_replayed_chooses_what_the_sweep_ran(adaptive_run, adaptive_cfg,
                                                          sweep_root):
    """Run D too (the full grid, adaptive off, in a copy): the replay of that grid's rows
    picks exactly the cells the adaptive sweep ran."""
    import dataclasses

    out, _ = adaptive_run
    full = sweep_root / "adaptive-full"
    shutil.copytree(out, full)
    cfg = dataclasses.replace(adaptive_cfg, adaptive=dataclasses.replace(adaptive_cfg.adaptive,
                                                                         enabled=False))
    summary = run_sweep(cfg, full, workers=1, progress=False)
    assert summary.ran == 2 and summary.left_out == 0
    result = replay(read_rows(full))
    assert result["cells"] == {"used": 8, "total": 10, "fraction": 0.8}
    assert result["curves"][0]["run"] == ["A", "B", "C", "E"]
