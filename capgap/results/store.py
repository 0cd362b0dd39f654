"""The sweep's results: one SQLite table ``cells``, one row per cell, written by the driver only.

SQLite (stdlib, one file) because it survives a killed driver mid-write (transactions), can
be read while a sweep runs (``capgap report``, ``capgap law fit``) and queried by anyone with
``sqlite3``. Workers never touch it: they return results and the driver records them, so
there is exactly one writer.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

from capgap.errors import CapgapError
from capgap.io import atomic_path
from capgap.results.rows import COLUMNS, CellRow

DB_NAME = "results.sqlite"
LAW_NAME = "law.json"  # the sweep's headline law, beside its database
STATUSES = ("pending", "running", "done", "failed")

# columns newer than the first schema: added to older databases (their rows read None)
ADDED = {"pruned_from", "teacher_flops", "student_flops", "prune_flops", "total_flops",
         "teacher_loss", "task"}
NAMES = [c for c, _, _ in COLUMNS]
ORDER_BY = ("student_target", "teacher_params", "objective", "allocation", "init", "tokens", "seed")
ORDER = " ORDER BY " + ", ".join(ORDER_BY)
SCHEMA = f"CREATE TABLE IF NOT EXISTS cells ({', '.join(f'{n} {t}' for n, t, _ in COLUMNS)})"


class Store:
    """The ``cells`` table of one sweep folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():  # created whole: a reader never finds it without its table
            with atomic_path(self.path) as tmp, closing(sqlite3.connect(tmp)) as con:
                con.execute(SCHEMA)
                con.commit()
        self._con = sqlite3.connect(self.path, timeout=30)
        self._con.row_factory = sqlite3.Row
        with self._tx() as con:
            con.execute(SCHEMA)
        have = {r[1] for r in self._con.execute("PRAGMA table_info(cells)")}
        if set(NAMES) - ADDED <= have:
            with self._tx() as con:
                for name, sql_type, _ in COLUMNS:
                    if name not in have:
                        con.execute(f"ALTER TABLE cells ADD COLUMN {name} {sql_type}")
            have |= set(NAMES)
        if not set(NAMES) <= have:
            raise CapgapError(f"{self.path}: table 'cells' lacks columns "
                              f"{', '.join(sorted(set(NAMES) - have))}; not a capgap sweep")

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._con:  # commits on success, rolls back on error
            yield self._con

    def close(self) -> None:
        self._con.close()

    def plan(self, key: str, fields: Mapping[str, Any]) -> None:
        """Insert a cell as pending, or refresh its descriptive fields (status kept)."""
        fields = {k: v for k, v in fields.items() if k in NAMES and k not in ("key", "status")}
        with self._tx() as con:
            con.execute("INSERT OR IGNORE INTO cells (key, status, attempts, updated) "
                        "VALUES (?, 'pending', 0, ?)", (key, _now()))
            row = dict(con.execute("SELECT * FROM cells WHERE key=?", (key,)).fetchone())
            self._update(con, key, {k: v for k, v in fields.items() if row.get(k) != v})

    def mark_running(self, key: str) -> None:
        with self._tx() as con:
            con.execute("UPDATE cells SET status='running', error=NULL, updated=?, "
                        "attempts=COALESCE(attempts, 0) + 1 WHERE key=?", (_now(), key))

    def mark_done(self, key: str, result: Mapping[str, Any]) -> None:
        with self._tx() as con:
            self._update(con, key, {**result, "status": "done", "error": None})

    def mark_failed(self, key: str, error: str) -> None:
        with self._tx() as con:
            self._update(con, key, {"status": "failed", "error": error[-2000:]})

    def reset(self, key: str) -> None:
        """Back to pending (a row said done but its run folder is not finished)."""
        with self._tx() as con:
            self._update(con, key, {"status": "pending"})

    def get(self, key: str) -> dict[str, Any] | None:
        row = self._con.execute("SELECT * FROM cells WHERE key=?", (key,)).fetchone()
        return dict(row) if row is not None else None

    def _update(self, con: sqlite3.Connection, key: str, fields: Mapping[str, Any]) -> None:
        fields = {k: v for k, v in fields.items() if k in NAMES and k != "key"}
        if not fields:
            return
        if "status" in fields:  # ``updated`` is the last status change, not the last refresh
            fields = {**fields, "updated": _now()}
        sets = ", ".join(f"{k}=?" for k in fields)
        con.execute(f"UPDATE cells SET {sets} WHERE key=?", (*fields.values(), key))


def database(source: str | Path) -> Path:
    """The ``results.sqlite`` of a sweep folder, or ``source`` itself when it is that file."""
    path = Path(source)
    if path.is_file():
        return path
    if not (path / DB_NAME).is_file():
        raise CapgapError(f"{source}: no {DB_NAME} (not a sweep folder, or nothing ran yet)")
    return path / DB_NAME


def read_cells_table(path: Path, status: str | None = None
               ) -> tuple[list[str], list[tuple[int, dict[str, Any]]]]:
    """The columns and (rowid, row) pairs of the ``cells`` table of the database ``path``,
    whatever its columns, through a read-only connection (a report or a ``law fit`` may run
    while the driver writes, and never writes itself); in the sweep's order when the table
    has its columns, else in insertion order. The one reader of sweep databases."""
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        raise CapgapError(f"{path}: cannot open ({e})") from None
    con.row_factory = sqlite3.Row
    try:
        have = [r[1] for r in con.execute("PRAGMA table_info(cells)")]
        if not have:
            raise CapgapError(f"{path}: no readable 'cells' table (not a capgap sweep)")
        order = ORDER if set(ORDER_BY) <= set(have) else " ORDER BY rowid"
        sql = ("SELECT rowid AS _rowid_, * FROM cells" + (" WHERE status=?" if status else "")
               + order)
        rows = [(r["_rowid_"], {c: r[c] for c in have})
                for r in con.execute(sql, (status,) if status else ())]
    except sqlite3.Error as e:
        raise CapgapError(f"{path}: cannot read ({e})") from None
    finally:
        con.close()
    return have, rows


def read_rows(source: str | Path, status: str | None = None) -> list[CellRow]:
    """The typed rows of a sweep folder (or its ``results.sqlite``), optionally only those
    with ``status``; a database without capgap's columns is refused."""
    path = database(source)
    have, rows = read_cells_table(path, status)
    if not set(NAMES) - ADDED <= set(have):
        raise CapgapError(f"{path}: no capgap 'cells' table (not a capgap sweep)")
    return [CellRow.from_mapping(row) for _, row in rows]


def sweep_law(sweep_dir: str | Path) -> dict[str, Any] | None:
    """The sweep's ``law.json``, if it has one."""
    path = Path(sweep_dir) / LAW_NAME
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
