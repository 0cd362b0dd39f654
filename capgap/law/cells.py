"""Sweep cells: loading them from CSV / JSONL / a sweep folder, selecting, grouping by size.

A *cell* is one distilled student: (student size, teacher size, seed) -> metric. Sources:

* a CSV or JSONL file (or a Python list of dicts) with at least ``student_params``,
  ``teacher_params`` and the metric column (``metric``, else ``val_loss``, else ``--metric``);
  optional ``seed``, ``student_size`` (size-group label), ``alpha``, ``status``, ``censored``
  and any other columns (usable in ``where`` filters);
* a sweep folder holding ``results.sqlite`` with a table ``cells`` (``status``,
  ``teacher_params``, ``student_params``, ``student_target``, ``seed``, ``alpha``,
  ``val_loss``, ``*_params_ne`` ...), read with the stdlib ``sqlite3``;
* a points file (``student_params,teacher_params`` only: already-optimal pairs, e.g.
  published data) is read by :func:`load_points` instead.

Selection rules (:func:`select_cells`): ``where`` filters first, then only cells with
``status == 'done'`` (when a status is given), ``alpha < 1`` (alpha == 1 is the CE-only
baseline), not marked ``censored`` (a run whose metric is not a valid final value) and with
a metric. Each drop is counted so the law says what it was fitted on.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capgap.errors import CapgapError
from capgap.results.store import DB_NAME, read_cells_table

SIZE_UNITS = {"total": "total parameters", "non_embedding": "non-embedding parameters"}
AS_GIVEN = "units as given in the source"  # size unit of a points file: whatever unit its columns use
DEFAULT_METRICS = ("metric", "val_loss")
GROUP_COLUMNS = ("student_target", "student_size")
SIZE_TOLERANCE = 0.01  # students within 1 % of each other are one size
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


@dataclass(frozen=True)
class Cell:
    """One distilled student: its size, its teacher's size and its metric.

    ``alpha`` None means distilled; ``status`` None means done; ``fields`` holds the raw
    row (every column) for ``where`` filters; ``origin`` says where the row came from.
    """

    student_params: float
    teacher_params: float
    metric: float | None
    seed: str | None = None
    group: str | None = None
    alpha: float | None = None
    status: str | None = None
    censored: bool = False
    fields: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)
    origin: str = ""


@dataclass(frozen=True)
class Point:
    """One already-optimal (student size, best teacher size) pair."""

    student_params: float
    teacher_params: float
    censored: bool = False
    origin: str = ""


@dataclass
class Table:
    """Raw rows of a source, each a dict column -> value, plus where each row came from."""

    name: str
    kind: str  # "csv" | "jsonl" | "sqlite" | "list"
    columns: list[str]
    rows: list[dict[str, Any]]
    origins: list[str]


@dataclass
class Selection:
    """What a fit was run on: the filters and how many rows each rule dropped."""

    where: dict[str, str]
    n_rows: int
    n_used: int
    dropped: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return {"where": self.where, "n_rows": self.n_rows, "n_used": self.n_used,
                "dropped": self.dropped}


# ---------------------------------------------------------------- reading raw tables


def read_table(source: str | Path | Iterable[Mapping[str, Any]]) -> Table:
    """Rows of a CSV / JSONL / JSON-list file, a sweep folder or a list of dicts."""
    if not isinstance(source, (str, Path)):
        rows = list(source)
        if not all(isinstance(r, Mapping) for r in rows):
            raise CapgapError("a list source must hold dicts (column -> value)")
        rows = [dict(r) for r in rows]
        columns = sorted({k for r in rows for k in r})
        return Table("<list>", "list", columns, rows, [f"item {i}" for i in range(len(rows))])
    path = Path(source)
    if path.is_dir():
        path = path / DB_NAME
        if not path.is_file():
            raise CapgapError(f"{source}: a sweep folder must contain {DB_NAME}")
    elif not path.is_file():
        raise CapgapError(f"{source}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix in (".sqlite", ".sqlite3", ".db"):
        return _read_sqlite(path)
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _read_json(path)
    return _read_csv(path)


def _read_csv(path: Path) -> Table:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in reader.fieldnames or []]
            rows, origins = [], []
            for row in reader:
                if None in row:  # more values than header columns
                    raise CapgapError(f"{path} line {reader.line_num}: more values than columns")
                rows.append({k.strip(): v for k, v in row.items()})
                origins.append(f"{path.name} line {reader.line_num}")
    except (UnicodeDecodeError, csv.Error) as e:
        raise CapgapError(f"{path}: not a readable CSV file ({e})") from None
    if not columns:
        raise CapgapError(f"{path}: empty file (expected a CSV header line)")
    return Table(str(path), "csv", columns, rows, origins)


def _read_json(path: Path) -> Table:
    """A ``.json`` list of objects, or ``.jsonl`` with one object per non-blank line."""
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix.lower() == ".json":
            items = json.loads(text)
            if not isinstance(items, list):
                raise CapgapError(f"{path}: expected a JSON list of objects")
            numbers = list(range(1, len(items) + 1))
        else:
            numbered = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip()]
            numbers = [i for i, _ in numbered]
            items = [json.loads(ln) for _, ln in numbered]
    except json.JSONDecodeError as e:
        raise CapgapError(f"{path}: invalid JSON ({e})") from None
    if not all(isinstance(r, dict) for r in items):
        raise CapgapError(f"{path}: every record must be a JSON object")
    columns = sorted({k for r in items for k in r})
    origins = [f"{path.name} record {i}" for i in numbers]
    return Table(str(path), "jsonl", columns, items, origins)


def _read_sqlite(path: Path) -> Table:
    columns, raw = read_cells_table(path)
    rows = [row for _, row in raw]
    origins = [f"{path.name} cells rowid {rowid}" for rowid, _ in raw]
    return Table(str(path), "sqlite", columns, rows, origins)


# ---------------------------------------------------------------- rows -> cells / points


def default_metric(table: Table) -> str | None:
    """The metric column used when none is named: ``metric``, else ``val_loss``."""
    return next((m for m in DEFAULT_METRICS if m in table.columns), None)


def looks_like_points(table: Table, metric: str | None = None) -> bool:
    """A table with student/teacher sizes but no metric column holds optimal pairs."""
    if metric is not None:
        return False
    has_sizes = {"student_params", "teacher_params"} <= set(table.columns)
    cell_only = {"seed", "alpha", "status"} & set(table.columns)
    return has_sizes and default_metric(table) is None and not cell_only


def load_cells(source: str | Path | Iterable[Any], *, metric: str | None = None,
               size: str = "total") -> list[Cell]:
    """Every row of ``source`` as a :class:`Cell` (selection happens in :func:`select_cells`).

    ``metric`` names the metric column (default ``metric``, else ``val_loss``); ``size`` is
    ``"total"`` or ``"non_embedding"`` (reads ``*_params_ne``). A list of Cells is returned
    as it is.
    """
    if isinstance(source, list) and source and all(isinstance(c, Cell) for c in source):
        return list(source)
    return cells_from_table(read_table(source), metric=metric, size=size)


def cells_from_table(table: Table, *, metric: str | None = None,
                     size: str = "total") -> list[Cell]:
    """Validate columns and convert each row; bad values raise one-line errors."""
    student_col, teacher_col = _size_columns(size)
    metric = metric or default_metric(table)
    _require(table, [student_col, teacher_col])
    if metric is None:
        raise CapgapError(f"{table.name}: no metric column (looked for "
                          f"{', '.join(DEFAULT_METRICS)}; name one with --metric, or give "
                          f"optimal pairs: columns {student_col},{teacher_col} only)")
    _require(table, [metric])
    group_col = next((c for c in GROUP_COLUMNS if c in table.columns), None)
    return [_cell(row, origin, student_col, teacher_col, metric, group_col)
            for row, origin in zip(table.rows, table.origins, strict=True)]


def load_points(source: str | Path | Iterable[Any], *, size: str = "total") -> list[Point]:
    """Already-optimal (student, teacher) pairs from a file or a list of dicts."""
    return points_from_table(read_table(source), size=size)


def points_from_table(table: Table, *, size: str = "total") -> list[Point]:
    """Validate and convert; an optional ``censored`` column marks points left out of the fit."""
    student_col, teacher_col = _size_columns(size)
    _require(table, [student_col, teacher_col])
    points = []
    for row, origin in zip(table.rows, table.origins, strict=True):
        s = _positive(_number(row.get(student_col), student_col, origin), student_col, origin)
        t = _positive(_number(row.get(teacher_col), teacher_col, origin), teacher_col, origin)
        points.append(Point(s, t, _flag(row.get("censored"), origin), origin))
    if not points:
        raise CapgapError(f"{table.name}: no rows")
    return points


def _size_columns(size: str) -> tuple[str, str]:
    if size not in SIZE_UNITS:
        raise CapgapError(f"unknown size unit {size!r} (use one of {', '.join(SIZE_UNITS)})")
    suffix = "_ne" if size == "non_embedding" else ""
    return f"student_params{suffix}", f"teacher_params{suffix}"


def _require(table: Table, columns: list[str]) -> None:
    missing = [c for c in columns if c not in table.columns]
    if missing:
        found = ", ".join(table.columns) or "none"
        raise CapgapError(f"{table.name}: missing column(s) {', '.join(missing)}; found: {found}")


def _cell(row: Mapping[str, Any], origin: str, student_col: str, teacher_col: str,
          metric: str, group_col: str | None) -> Cell:
    s = _positive(_number(row.get(student_col), student_col, origin), student_col, origin)
    t = _positive(_number(row.get(teacher_col), teacher_col, origin), teacher_col, origin)
    group = row.get(group_col) if group_col else None
    return Cell(
        student_params=s,
        teacher_params=t,
        metric=_number(row.get(metric), metric, origin, required=False),
        seed=_label(row.get("seed")),
        group=_label(group),
        alpha=_number(row.get("alpha"), "alpha", origin, required=False),
        status=None if row.get("status") in (None, "") else str(row["status"]).strip(),
        censored=_flag(row.get("censored"), origin),
        fields=row,
        origin=origin,
    )


def _number(value: Any, column: str, origin: str, required: bool = True) -> float | None:
    """A finite float, or None for an empty optional value; anything else is an error."""
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise CapgapError(f"{origin}: {column} is empty")
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise CapgapError(f"{origin}: {column} {value!r} is not a number") from None
    if not math.isfinite(out):
        raise CapgapError(f"{origin}: {column} {value!r} is not a finite number")
    return out


def _positive(value: float | None, column: str, origin: str) -> float:
    if value is None or value <= 0:
        raise CapgapError(f"{origin}: {column} must be a positive size, got {value}")
    return value


def _flag(value: Any, origin: str) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise CapgapError(f"{origin}: censored {value!r} is not true/false")


def _label(value: Any) -> str | None:
    """Seeds and group labels as strings; ``3``, ``3.0`` and ``"3"`` are the same label."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        f = float(value)
        if math.isfinite(f) and f == int(f):
            return str(int(f))
    except (TypeError, ValueError):
        pass
    return str(value).strip()


# ---------------------------------------------------------------- selection


def select_cells(cells: list[Cell], where: Mapping[str, Any] | None = None
                 ) -> tuple[list[Cell], Selection]:
    """The cells a law is fitted on, and a record of what was dropped and why."""
    where = {str(k): str(v) for k, v in (where or {}).items()}
    kept = _apply_where(cells, where)
    dropped = {"where": len(cells) - len(kept)}
    rules = [
        ("not_done", lambda c: c.status is not None and c.status != "done"),
        ("baseline", lambda c: c.alpha is not None and c.alpha >= 1.0),
        ("censored", lambda c: c.censored),
        ("missing_metric", lambda c: c.metric is None),
    ]
    for name, drop in rules:
        before = len(kept)
        kept = [c for c in kept if not drop(c)]
        dropped[name] = before - len(kept)
    if not kept:
        summary = ", ".join(f"{k} {v}" for k, v in dropped.items() if v)
        raise CapgapError(f"no distilled, finished cells with a metric left of {len(cells)} "
                          f"(dropped: {summary or 'none'})")
    return kept, Selection(where, len(cells), len(kept), dropped)


def filter_table(table: Table, where: Mapping[str, Any] | None) -> Table:
    """The rows of ``table`` that match every ``where`` item (used for points files)."""
    keep = _apply_where(list(range(len(table.rows))),
                        {str(k): str(v) for k, v in (where or {}).items()},
                        lambda i: table.rows[i])
    return Table(table.name, table.kind, table.columns, [table.rows[i] for i in keep],
                 [table.origins[i] for i in keep])


def _apply_where(items: list[Any], where: Mapping[str, str],
                 fields: Callable[[Any], Mapping[str, Any]] = lambda c: c.fields) -> list[Any]:
    """Items whose raw row matches every ``where`` item; an unknown column or a filter that
    matches nothing is an error naming what is there."""
    kept = items
    for key, want in where.items():
        present = [c for c in kept if key in fields(c)]
        if not present:
            columns = sorted({k for c in items for k in fields(c)})
            raise CapgapError(f"--where {key}={want}: no column {key!r} "
                              f"(columns: {', '.join(columns) or 'none'})")
        matched = [c for c in present if matches(fields(c)[key], want)]
        if not matched:
            values = sorted({str(fields(c)[key]) for c in present})[:10]
            raise CapgapError(f"no cells match {key}={want} (values present: {', '.join(values)})")
        kept = matched
    return kept


def matches(value: Any, want: str) -> bool:
    """Equal as numbers when both are numbers (``2e6`` matches ``2000000``), else as text."""
    try:
        return float(value) == float(want)
    except (TypeError, ValueError):
        return str(value).strip() == want.strip()


# ---------------------------------------------------------------- grouping


def group_by_size(cells: list[Cell], tol: float = SIZE_TOLERANCE) -> list[list[Cell]]:
    """Cells grouped into student sizes, smallest first.

    With a group label on every cell (``student_target`` / ``student_size``) the label
    decides; otherwise sorted sizes are chained while within ``tol`` (1 %) of the group's
    smallest member, so every pair inside a group is within 1 % of each other.
    """
    if all(c.group is not None for c in cells):
        groups: dict[str, list[Cell]] = {}
        for c in cells:
            groups.setdefault(c.group, []).append(c)  # type: ignore[arg-type]
        out = list(groups.values())
    else:
        out = []
        for c in sorted(cells, key=lambda c: c.student_params):
            if out and c.student_params <= out[-1][0].student_params * (1 + tol):
                out[-1].append(c)
            else:
                out.append([c])
    return sorted(out, key=lambda g: float(np.mean([c.student_params for c in g])))
