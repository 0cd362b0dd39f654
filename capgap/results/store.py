"""The sweep's results: one SQLite table ``cells``, one row per cell, written by the driver only.

SQLite (stdlib, one file) because it survives a killed driver mid-write (transactions), can
be read while a sweep runs (``capgap report``, ``capgap law fit``) and queried by anyone with
``sqlite3``. Workers never touch it: they return results and the driver records them, so
there is exactly one writer.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from capgap.errors import CapgapError

DB_NAME = "results.sqlite"
STATUSES = ("pending", "running", "done", "failed")

# (column, SQL type, meaning) — the schema is documented where it is defined.
COLUMNS: list[tuple[str, str, str]] = [
    ("key", "TEXT PRIMARY KEY", "hash of the resolved cell config; cells/<key>/ is its run"),
    ("status", "TEXT NOT NULL", "pending | running | done | failed"),
    ("teacher", "TEXT", "teacher name (family size or folder name)"),
    ("teacher_params", "INTEGER", "teacher total parameters"),
    ("teacher_params_ne", "INTEGER", "teacher non-embedding parameters"),
    ("student_target", "INTEGER", "requested student size (total params); the size group"),
    ("student_params", "INTEGER", "student total parameters after pruning"),
    ("student_params_ne", "INTEGER", "student non-embedding parameters"),
    ("sparsity", "REAL", "1 - student_params / params of the teacher it was pruned from"),
    ("objective", "TEXT", "divergence name, or 'ce' for the alpha = 1 baseline"),
    ("alpha", "REAL", "weight of CE on labels (1 = no teacher)"),
    ("allocation", "TEXT", "global | uniform pruning allocation"),
    ("init", "TEXT", "pruned | scratch student initialisation"),
    ("tokens", "INTEGER", "distillation token budget"),
    ("seed", "INTEGER", "training seed (data order; init for scratch students)"),
    ("val_loss", "REAL", "held-out loss (nats/token) of the trained student"),
    ("val_ppl", "REAL", "held-out perplexity"),
    ("val_bpb", "REAL", "held-out bits per byte (tokenizer-independent)"),
    ("tokens_per_s", "REAL", "training throughput"),
    ("prune_s", "REAL", "seconds to make the student (shared by the cells using it)"),
    ("distill_s", "REAL", "seconds of this cell's training + evaluation"),
    ("teacher_path", "TEXT", "teacher model folder or hub name"),
    ("student_path", "TEXT", "student init folder (students/...)"),
    ("cell_dir", "TEXT", "the cell's distill run folder"),
    ("model_dir", "TEXT", "the trained student's model folder"),
    ("error", "TEXT", "last error of a failed cell"),
    ("attempts", "INTEGER", "times the cell was started"),
    ("updated", "TEXT", "last status change (local time)"),
    ("pruned_from", "TEXT", "teacher the student was cut from (its own, or the same-init "
                            "control's students.prune_from)"),
]
ADDED = {"pruned_from"}  # columns newer than the first schema: added to older databases
NAMES = [c for c, _, _ in COLUMNS]
ORDER = " ORDER BY student_target, teacher_params, objective, allocation, init, tokens, seed"


class Store:
    """The ``cells`` table of one sweep folder."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = sqlite3.connect(self.path, timeout=30)
        self._con.row_factory = sqlite3.Row
        with self._tx() as con:
            cols = ", ".join(f"{n} {t}" for n, t, _ in COLUMNS)
            con.execute(f"CREATE TABLE IF NOT EXISTS cells ({cols})")
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

    def rows(self, status: str | None = None) -> list[dict[str, Any]]:
        """All rows (or those with ``status``), in a stable order."""
        sql = "SELECT * FROM cells" + (" WHERE status=?" if status else "") + ORDER
        return [dict(r) for r in self._con.execute(sql, (status,) if status else ())]

    def _update(self, con: sqlite3.Connection, key: str, fields: Mapping[str, Any]) -> None:
        fields = {k: v for k, v in fields.items() if k in NAMES and k != "key"}
        if not fields:
            return
        sets = ", ".join(f"{k}=?" for k in fields) + ", updated=?"
        con.execute(f"UPDATE cells SET {sets} WHERE key=?", (*fields.values(), _now(), key))


def read_rows(sweep_dir: str | Path, status: str | None = None) -> list[dict[str, Any]]:
    """Rows of a sweep folder's ``results.sqlite``, through a read-only connection: a
    report or a ``law fit`` may run while the driver writes, and never writes itself."""
    path = Path(sweep_dir) / DB_NAME
    if not path.is_file():
        raise CapgapError(f"{sweep_dir}: no {DB_NAME} (not a sweep folder, or nothing ran yet)")
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error as e:
        raise CapgapError(f"{path}: cannot open ({e})") from None
    con.row_factory = sqlite3.Row
    try:
        have = {r[1] for r in con.execute("PRAGMA table_info(cells)")}
        if not set(NAMES) - ADDED <= have:
            raise CapgapError(f"{path}: no capgap 'cells' table (not a capgap sweep)")
        sql = "SELECT * FROM cells" + (" WHERE status=?" if status else "") + ORDER
        return [dict(r) for r in con.execute(sql, (status,) if status else ())]
    except sqlite3.Error as e:
        raise CapgapError(f"{path}: cannot read ({e})") from None
    finally:
        con.close()


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")
