"""The sweep's results as plain-text tables: each distilled cell beside its no-teacher
baseline (paired by :mod:`capgap.results.pairing`), the teachers, the compute spent."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from capgap.report.text import table
from capgap.results.accounting import status_counts
from capgap.results.pairing import Paired, paired_rows
from capgap.results.store import read_rows

COLUMNS: list[tuple[str, str, str]] = [
    ("student_m", "student", ".3f"),
    ("teacher", "teacher", ""),
    ("teacher_m", "T params", ".3f"),
    ("ratio", "T/S", ".1f"),
    ("sparsity", "sparsity", ".0%"),
    ("objective", "objective", ""),
    ("tokens", "tokens", ",d"),
    ("seed", "seed", "d"),
    ("val_loss", "distilled", ".4f"),
    ("baseline_loss", "baseline", ".4f"),
    ("gain", "gain", "+.4f"),
    ("best", "best", ""),
]

TEACHER_COLUMNS: list[tuple[str, str, str]] = [
    ("name", "teacher", ""),
    ("params_m", "params (M)", ".3f"),
    ("params_ne_m", "non-emb (M)", ".3f"),
    ("train_tokens", "tokens", ",d"),
    ("tokens_per_param", "tok/param", ".2f"),
    ("val_loss", "val loss", ".4f"),
    ("seconds", "time s", ".0f"),
]

COMPUTE_COLUMNS: list[tuple[str, str, str]] = [
    ("stage", "stage", ""),
    ("runs", "runs", "d"),
    ("tokens", "tokens", ",d"),
    ("seconds", "seconds", ",.0f"),
]


def paired_table(paired: Iterable[Paired]) -> list[dict[str, Any]]:
    """The table rows of paired cells (sizes in millions, T/S, ``*`` on the best teacher)."""
    return [{**p.row, "student_m": p.row.student_params / 1e6,
             "teacher_m": p.row.teacher_params / 1e6,
             "ratio": p.row.teacher_params / p.row.student_params,
             "baseline_loss": p.baseline_loss, "gain": p.gain, "best": "*" if p.best else ""}
            for p in paired]


def summary_table(sweep_dir: str | Path) -> str:
    """The terminal summary: one line per distilled cell, baselines beside them."""
    rows = read_rows(sweep_dir)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status_counts(rows).items()))
    paired = paired_table(paired_rows(rows))
    head = f"cells: {counts or 'none'}"
    if not paired:
        return head + "\n(no finished distilled cells yet)"
    return f"{head}\n{table(paired, COLUMNS)}\n* = best teacher for that student size"
