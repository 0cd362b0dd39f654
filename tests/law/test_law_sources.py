"""Loading cells and points: CSV, JSONL, lists, sweep folders (results.sqlite); bad input."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from capgap.errors import CapgapError
from capgap.law import fit_source, load_cells

K_TRUE = 2.5

SWEEP_COLUMNS = ("id INTEGER PRIMARY KEY, status TEXT, teacher_params INTEGER, "
                 "student_params INTEGER, student_target INTEGER, seed INTEGER, objective TEXT, "
                 "tokens INTEGER, alpha REAL, val_loss REAL, teacher_params_ne INTEGER, "
                 "student_params_ne INTEGER")


def _rows(cells) -> list[dict]:
    return [{"student_params": c.student_params, "teacher_params": c.teacher_params,
             "metric": c.metric, "seed": c.seed} for c in cells]


def _write_csv(path: Path, rows: list[dict]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _sweep(folder: Path, cells, ne_scale: float = 0.5) -> Path:
    """A sweep folder whose soft_ce / 2M-token cells hold ``cells``; decoys everywhere else."""
    folder.mkdir()
    con = sqlite3.connect(folder / "results.sqlite")
    con.execute(f"CREATE TABLE cells ({SWEEP_COLUMNS})")
    insert = ("INSERT INTO cells (status, teacher_params, student_params, student_target, seed, "
              "objective, tokens, alpha, val_loss, teacher_params_ne, student_params_ne) "
              "VALUES (?,?,?,?,?,?,?,?,?,?,?)")
    for c in cells:
        t, s = int(c.teacher_params), int(c.student_params * 1.002)  # pruned sizes drift
        target = int(c.student_params)
        base = (t, s, target, int(c.seed))
        ne = (int(t * ne_scale), int(s * ne_scale))
        con.execute(insert, ("done", *base, "soft_ce", 2_000_000, 0.5, c.metric, *ne))
        con.execute(insert, ("done", *base, "soft_ce", 2_000_000, 1.0, c.metric - 1, *ne))
        con.execute(insert, ("failed", *base, "soft_ce", 2_000_000, 0.5, None, *ne))
        con.execute(insert, ("done", *base, "reverse_kl", 2_000_000, 0.5, c.metric - 1, *ne))
        con.execute(insert, ("done", *base, "soft_ce", 400_000, 0.5, c.metric - 1, *ne))
    con.commit()
    con.close()
    return folder


def test_sweep_folder_with_where_and_size_unit(tmp_path, make_cells):
    cells = make_cells(n_sizes=4, seeds=2, noise=0.0)
    folder = _sweep(tmp_path / "sweep", cells)
    where = {"objective": "soft_ce", "tokens": "2e6"}
    law = fit_source(folder, where=where, n_boot=100)
    assert law["status"] == "ok"
    assert law["metric"]["name"] == "val_loss"
    assert law["selection"]["source_kind"] == "sqlite"
    assert law["selection"]["dropped"] == {"where": 2 * len(cells), "not_done": len(cells),
                                           "baseline": len(cells), "censored": 0,
                                           "missing_metric": 0}
    assert law["ratio"] == pytest.approx(K_TRUE / 1.002, rel=1e-5)
    assert [s["label"] for s in law["sizes"]] == sorted({str(int(c.student_params))
                                                         for c in cells}, key=int)
    ne = fit_source(folder, where=where, size="non_embedding", n_boot=100)
    assert ne["size_unit"] == "non-embedding parameters"
    assert ne["points"][0][0] == pytest.approx(law["points"][0][0] * 0.5, rel=1e-5)


def test_sweep_folder_mixing_settings_is_refused(tmp_path, make_cells):
    folder = _sweep(tmp_path / "sweep", make_cells(n_sizes=3, seeds=2))
    with pytest.raises(CapgapError, match="objective"):
        fit_source(folder, n_boot=50)


def test_cells_csv_jsonl_and_list_agree(tmp_path, make_cells):
    cells = make_cells(n_sizes=4, seeds=2)
    rows = _rows(cells)
    csv_law = fit_source(_write_csv(tmp_path / "cells.csv", rows), n_boot=100)
    jsonl = tmp_path / "cells.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows))
    jsonl_law = fit_source(jsonl, n_boot=100)
    list_law = fit_source(rows, n_boot=100)
    for law in (jsonl_law, list_law):
        assert np.ravel(law["points"]) == pytest.approx(np.ravel(csv_law["points"]))
        assert law["ratio_ci"] == pytest.approx(csv_law["ratio_ci"])
    assert csv_law["selection"]["source_kind"] == "csv"


def test_metric_column_can_be_named(tmp_path, make_cells):
    rows = [r | {"accuracy": -r["metric"]} for r in _rows(make_cells(n_sizes=3, seeds=2))]
    path = _write_csv(tmp_path / "cells.csv", rows)
    by_loss = fit_source(path, n_boot=50)
    by_acc = fit_source(path, metric="accuracy", higher_is_better=True, n_boot=50)
    assert np.ravel(by_acc["points"]) == pytest.approx(np.ravel(by_loss["points"]))
    assert by_acc["metric"] == {"name": "accuracy", "higher_is_better": True}


def test_points_csv_with_censored_column(tmp_path):
    path = tmp_path / "points.csv"
    path.write_text("student_params,teacher_params,censored\n"
                    "70,160,false\n160,410,0\n410,1000,\n1000,2800,no\n1400,2800,true\n")
    law = fit_source(path, n_boot=200)
    assert law["status"] == "ok" and law["ci_method"] == "sizes"
    assert law["n_points"] == 4 and law["selection"]["source_kind"] == "csv"
    assert [s["used_in_fit"] for s in law["sizes"]] == [True, True, True, True, False]
    assert law["size_unit"] == "units as given in the source"
    assert law["slope_ci"][0] <= law["slope"] <= law["slope_ci"][1]
    two = tmp_path / "two.csv"
    two.write_text("student_params,teacher_params\n70,160\n160,410\n")
    law = fit_source(two, n_boot=50)
    assert law["status"] == "insufficient" and "perfect by construction" in law["reason"]
    one = tmp_path / "one.csv"
    one.write_text("student_params,teacher_params\n70,160\n70,180\n")
    law = fit_source(one, n_boot=50)
    assert law["status"] == "insufficient" and "one student size cannot fix a line" in law["reason"]


@pytest.mark.parametrize(("content", "message"), [
    ("student_params,teacher_params,metric\n1e6,abc,3.0\n", "teacher_params 'abc' is not a number"),
    ("student_params,metric\n1e6,3.0\n", "missing column"),
    ("student_params,teacher_params,metric\n1e6,-5,3.0\n", "positive"),
    ("student_params,teacher_params,metric\n1e6,2e6,inf\n", "finite"),
    ("student_params,teacher_params,seed\n1e6,2e6,1\n", "no metric column"),
    ("student,teacher,val_loss\n1e6,2e6,3.0\n", "missing column.s. student_params, teacher_params"),
    ("student,teacher\n1e6,2e6\n", "missing column.s. student_params, teacher_params"),
    ("", "empty file"),
])
def test_bad_csv_is_a_one_line_error(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(CapgapError, match=message) as err:
        fit_source(path, n_boot=10)
    assert "\n" not in str(err.value)


def test_bad_sources_and_filters(tmp_path, make_cells):
    with pytest.raises(CapgapError, match="no such file"):
        load_cells(tmp_path / "nope.csv")
    (tmp_path / "empty_sweep").mkdir()
    with pytest.raises(CapgapError, match="results.sqlite"):
        load_cells(tmp_path / "empty_sweep")
    db = tmp_path / "other" / "results.sqlite"
    db.parent.mkdir()
    sqlite3.connect(db).execute("CREATE TABLE runs (x INTEGER)").connection.close()
    with pytest.raises(CapgapError, match="'cells' table"):
        load_cells(db.parent)
    path = _write_csv(tmp_path / "cells.csv", _rows(make_cells(n_sizes=3, seeds=1)))
    with pytest.raises(CapgapError, match="no column 'objective'"):
        fit_source(path, where={"objective": "soft_ce"}, n_boot=10)
    with pytest.raises(CapgapError, match="no cells match seed=9"):
        fit_source(path, where={"seed": "9"}, n_boot=10)
    with pytest.raises(CapgapError, match="unknown size unit"):
        fit_source(path, size="embedding", n_boot=10)


def test_points_where_filter_and_cell_lists(tmp_path, make_cells):
    path = tmp_path / "published.csv"
    path.write_text("student_params,teacher_params,family\n"
                    "70,160,pythia\n160,410,pythia\n410,1000,pythia\n"
                    "124,355,gpt2\n355,1000,gpt2\n")
    law = fit_source(path, where={"family": "pythia"}, n_boot=50)
    assert law["n_points"] == 3 and law["selection"]["where"] == {"family": "pythia"}
    cells = make_cells(n_sizes=3, seeds=2, noise=0.0)
    from_list = fit_source(cells, n_boot=50)
    assert from_list["selection"]["source_kind"] == "list"
    assert from_list["ratio"] == pytest.approx(K_TRUE)
    with pytest.raises(CapgapError, match="dicts"):
        fit_source([(1, 2)], n_boot=10)


def test_sqlite_file_given_directly(tmp_path, make_cells):
    folder = _sweep(tmp_path / "sweep", make_cells(n_sizes=3, seeds=2, noise=0.0))
    law = fit_source(folder / "results.sqlite", where={"objective": "soft_ce", "tokens": 2e6},
                     n_boot=50)
    assert law["status"] == "ok" and law["n_points"] == 3
