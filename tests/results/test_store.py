"""The sweep database across schema versions: a database written before the newer columns
existed still reads (their values missing, never zero) and takes them on when a sweep opens it."""

from __future__ import annotations

import sqlite3
import time

from capgap.results.rows import COLUMNS
from capgap.results.store import ADDED, DB_NAME, Store, read_rows

FLOPS = ("teacher_flops", "student_flops", "prune_flops", "total_flops")


def _old_database(path):  # noqa: ANN001, ANN202
    """The first schema (no column of ADDED) with one finished cell."""
    cols = [(n, t) for n, t, _ in COLUMNS if n not in ADDED]
    with sqlite3.connect(path) as con:
        con.execute(f"CREATE TABLE cells ({', '.join(f'{n} {t}' for n, t in cols)})")
        con.execute("INSERT INTO cells (key, status, teacher, teacher_params, student_target, "
                    "alpha, tokens, seed, val_loss) VALUES ('k', 'done', 'T1', 1000, 400, 0.5, "
                    "2048, 0, 3.25)")
    con.close()


def test_an_old_database_reads_flops_as_missing(tmp_path):
    _old_database(tmp_path / DB_NAME)
    (row,) = read_rows(tmp_path)
    assert row.val_loss == 3.25 and row.finished
    assert all(row[c] is None for c in FLOPS)


def test_a_sweep_opening_an_old_database_adds_the_columns(tmp_path):
    _old_database(tmp_path / DB_NAME)
    store = Store(tmp_path / DB_NAME)
    store.plan("k2", {"teacher": "T2", "alpha": 1.0, "teacher_flops": 0.0, "student_flops": 6e12,
                      "prune_flops": 2e12, "total_flops": 8e12})
    store.close()
    have = {r[1] for r in sqlite3.connect(tmp_path / DB_NAME).execute("PRAGMA table_info(cells)")}
    assert set(FLOPS) <= have
    rows = {r.key: r for r in read_rows(tmp_path)}
    assert rows["k"].total_flops is None and rows["k"].val_loss == 3.25
    assert (rows["k2"].teacher_flops, rows["k2"].total_flops) == (0.0, 8e12)


def test_refreshing_a_rows_description_keeps_its_status_time(tmp_path):
    """``updated`` is the last status change: wall-time accounting reads it, so a resumed
    sweep that fills a newer column into finished rows must not move it."""
    store = Store(tmp_path / DB_NAME)
    store.plan("k", {"teacher": "T1", "alpha": 0.5})
    store.mark_done("k", {"val_loss": 3.0})
    stamp = store.get("k")["updated"]
    time.sleep(1.1)
    store.plan("k", {"teacher": "T1", "alpha": 0.5, "teacher_loss": 2.5})
    row = store.get("k")
    assert row["teacher_loss"] == 2.5 and row["updated"] == stamp and row["status"] == "done"
    store.mark_failed("k", "boom")
    assert store.get("k")["updated"] != stamp
    store.close()
