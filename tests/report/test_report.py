"""The report from a synthetic sweep database: HTML, figures that exist, the summary table.

Rows are written through the sweep's own Store (no training), with a rise-then-fall built in
so the law fits and the report shows it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from capgap.cli import main
from capgap.io import write_json
from capgap.law import fit_source
from capgap.results.store import DB_NAME, Store

TEACHERS = [500_000, 1_000_000, 2_000_000, 4_000_000, 8_000_000]
STUDENTS = [300_000, 600_000, 1_200_000]


def _loss(s: int, t: int) -> float:
    best = 2.5 * s  # the optimum sits at T = 2.5 S in log space
    return 4.0 - 0.1 * s / 1e6 + 0.05 * (__import__("math").log(t / best)) ** 2


@pytest.fixture
def sweep(tmp_path) -> Path:
    store = Store(tmp_path / DB_NAME)
    for s in STUDENTS:
        for t in (t for t in TEACHERS if t > s):
            for alpha, obj in ((0.5, "soft_ce"), (1.0, "ce")):
                key = f"{s}-{t}-{obj}"
                loss = _loss(s, t) + (0.05 if alpha == 1 else 0.0)
                flops = {"teacher_flops": 2.0 * t * 1000 if alpha < 1 else 0.0,
                         "student_flops": 6.0 * s * 1000, "prune_flops": 4.0 * t * 100}
                flops["total_flops"] = sum(flops.values())
                store.plan(key, flops | {"teacher": f"T{t // 1000}k", "teacher_params": t,
                                 "teacher_params_ne": t // 2, "student_target": s,
                                 "student_params": s, "student_params_ne": s // 2,
                                 "sparsity": 1 - s / t, "objective": obj, "alpha": alpha,
                                 "allocation": "global", "init": "pruned", "tokens": 1000,
                                 "seed": 0})
                store.mark_done(key, {"val_loss": loss, "val_ppl": 1.0, "val_bpb": 1.0})
    store.plan("broken", {"teacher": "T1", "teacher_params": 10**6, "student_target": 1000,
                          "student_params": 1000, "objective": "soft_ce", "alpha": 0.5})
    store.mark_failed("broken", "RuntimeError: boom")
    store.close()
    write_json(tmp_path / "law.json", fit_source(tmp_path, where={"objective": "soft_ce"},
                                                 n_boot=50))
    return tmp_path


def test_report_html_references_pngs_that_exist(sweep, capsys):
    assert main(["report", str(sweep)]) == 0
    printed = capsys.readouterr().out
    assert "distilled" in printed and "baseline" in printed and "index.html" in printed
    page = (sweep / "report" / "index.html").read_text()
    names = set(re.findall(r'href="([^"]+\.png)"', page))
    assert {f"loss_student_{s}.png" for s in STUDENTS} | {"law.png", "gain.png",
                                                           "loss_vs_flops.png"} <= names
    assert "Compute spent" in page and "baseline cells (alpha = 1)" in page
    for name in names:
        assert (sweep / "report" / name).stat().st_size > 1000
    assert page.count("data:image/png;base64,") == len(names)  # self-contained
    assert "T* = " in page and "boom" in page  # the law, and the failed cell
    assert "Bracket (a bound from the teacher grid" in page


def test_summary_pairs_each_cell_with_its_baseline(sweep):
    from capgap.results.pairing import paired_rows
    from capgap.results.store import read_rows

    rows = paired_rows(read_rows(sweep))
    assert len(rows) == sum(t > s for s in STUDENTS for t in TEACHERS)
    assert all(p.gain == pytest.approx(0.05) for p in rows)
    best = {p.row.student_target: p.row.teacher_params for p in rows if p.best}
    assert best == {300_000: 1_000_000, 600_000: 2_000_000, 1_200_000: 4_000_000}


def test_report_of_a_folder_without_a_sweep_is_one_line(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "results.sqlite" in capsys.readouterr().err


def test_report_exports_every_cell_as_csv_without_machine_paths(sweep):
    import csv

    assert main(["report", str(sweep)]) == 0
    with open(sweep / "report" / "cells.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1 + 2 * sum(1 for s in STUDENTS for t in TEACHERS if t > s)
    assert [r["key"] for r in rows] == sorted(r["key"] for r in rows)
    broken = next(r for r in rows if r["key"] == "broken")
    assert broken["status"] == "failed" and "boom" in broken["error"]
    done = next(r for r in rows if r["key"] == "300000-500000-soft_ce")
    assert float(done["val_loss"]) == pytest.approx(_loss(300_000, 500_000))
    assert "cell_dir" not in done and "model_dir" not in done  # this machine's paths
    assert "cells.csv" in (sweep / "report" / "index.html").read_text()


def test_report_draws_loss_against_flops(sweep):
    assert main(["report", str(sweep)]) == 0
    data = json.loads((sweep / "report" / "loss_vs_flops.json").read_text())
    assert (data["x"], data["y"]) == ("total_flops", "val_loss")
    assert len(data["series"]) == 2 * len(STUDENTS)  # distilled and baseline per student size
    for series in data["series"]:
        s = int(float(series["label"].split("M")[0].removeprefix("S ")) * 1e6)
        pts = series["points"]
        assert [p["teacher_params"] for p in pts] == [t for t in TEACHERS if t > s]
        for p in pts:
            t = p["teacher_params"]
            teacher = 0.0 if series["baseline"] else 2.0 * t * 1000
            assert p["total_flops"] == teacher + 6.0 * s * 1000 + 4.0 * t * 100
            assert p["val_loss"] == pytest.approx(_loss(s, t) + 0.05 * series["baseline"])
    page = (sweep / "report" / "index.html").read_text()
    assert "Model FLOPs of the finished cells" in page
