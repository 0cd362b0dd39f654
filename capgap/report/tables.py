"""The sweep's results as tables: each distilled cell beside its no-teacher baseline.

Pairing a cell with the baseline that shares its student, tokens and seed is what makes the
distillation gain readable (at small budgets the pruning damage dominates; the gain is the
part the teacher is responsible for).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from capgap.cli.common import table
from capgap.sweep.store import read_rows

PAIR_KEYS = ("teacher", "student_target", "allocation", "init", "tokens", "seed")

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


def paired_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Finished distilled rows, each with its baseline's loss, the gain, and a mark on the
    best teacher of its (student size, objective, setting)."""
    done = [r for r in rows if r["status"] == "done"]
    base = {tuple(r[k] for k in PAIR_KEYS): r["val_loss"] for r in done if r["alpha"] >= 1}
    out = []
    for r in (r for r in done if r["alpha"] < 1):
        b = base.get(tuple(r[k] for k in PAIR_KEYS))
        out.append({**r, "student_m": r["student_params"] / 1e6,
                    "teacher_m": r["teacher_params"] / 1e6,
                    "ratio": r["teacher_params"] / r["student_params"],
                    "baseline_loss": b, "gain": None if b is None else b - r["val_loss"],
                    "best": ""})
    _mark_best(out)
    return out


def _mark_best(rows: list[dict[str, Any]]) -> None:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["student_target"], r["objective"], r["allocation"], r["init"], r["tokens"],
               r["seed"])
        groups.setdefault(key, []).append(r)
    for group in groups.values():
        min(group, key=lambda r: r["val_loss"])["best"] = "*"


def status_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    return counts


def summary_table(sweep_dir: str | Path) -> str:
    """The terminal summary: one line per distilled cell, baselines beside them."""
    rows = read_rows(sweep_dir)
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status_counts(rows).items()))
    paired = paired_rows(rows)
    head = f"cells: {counts or 'none'}"
    if not paired:
        return head + "\n(no finished distilled cells yet)"
    return f"{head}\n{table(paired, COLUMNS)}\n* = best teacher for that student size"
