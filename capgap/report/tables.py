"""The sweep's results as tables: each distilled cell beside its no-teacher baseline.

Pairing a cell with the baseline that shares its student, tokens and seed is what makes the
distillation gain readable (at small budgets the pruning damage dominates; the gain is the
part the teacher is responsible for).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from capgap.report.text import table
from capgap.results.store import read_rows

PAIR_KEYS = ("student_target", "allocation", "init", "tokens", "seed")  # and the cut-from teacher

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
    done = [r for r in rows if r["status"] == "done" and r.get("val_loss") is not None]
    base = {_student(r): r["val_loss"] for r in done if r["alpha"] >= 1}
    out = []
    for r in (r for r in done if r["alpha"] < 1):
        b = base.get(_student(r))
        out.append({**r, "student_m": r["student_params"] / 1e6,
                    "teacher_m": r["teacher_params"] / 1e6,
                    "ratio": r["teacher_params"] / r["student_params"],
                    "baseline_loss": b, "gain": None if b is None else b - r["val_loss"],
                    "best": ""})
    _mark_best(out)
    return out


def _student(r: dict[str, Any]) -> tuple:
    """The student a row trained: the teacher it was cut from (its own unless a same-init
    control), its size, allocation, init, budget and seed. A baseline pairs with every
    distilled cell of its student, whichever teacher distils it."""
    return (r.get("pruned_from") or r["teacher"], *(r[k] for k in PAIR_KEYS))


def _mark_best(rows: list[dict[str, Any]]) -> None:
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["student_target"], r["objective"], r["allocation"], r["init"], r["tokens"],
               r["seed"])
        groups.setdefault(key, []).append(r)
    for group in groups.values():
        min(group, key=lambda r: r["val_loss"])["best"] = "*"


def left_seconds(rows: list[dict[str, Any]], done: list[dict[str, Any]]) -> float:
    """Worker-seconds the unfinished cells of ``rows`` should still take, each priced at the
    per-token cost of the most similar finished cells in ``done`` (baseline or distilled, then
    the same teacher and student size, else the same teacher, else any): an estimate for an
    ETA, not a promise."""
    finished = [r for r in done if r["status"] == "done" and r.get("tokens")]
    total = 0.0
    for r in rows:
        if r["status"] == "done" or not r.get("tokens"):
            continue
        kind = [d for d in finished if _is_baseline(d) == _is_baseline(r)] or finished
        for keys in (("teacher_params", "student_target"), ("teacher_params",), ()):
            like = [d for d in kind if all(d[k] == r[k] for k in keys)]
            if like:
                spent = sum((d.get("distill_s") or 0.0) + (d.get("prune_s") or 0.0)
                            for d in like)
                total += r["tokens"] * spent / sum(d["tokens"] for d in like)
                break
    return total


def _is_baseline(row: dict[str, Any]) -> bool:
    return (row.get("alpha") or 0) >= 1  # baselines run no teacher: priced apart


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


def teacher_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The pretrained teachers (from ``teachers/DONE.json``): size, tokens, tokens/param.
    Empty when the sweep was given existing models."""
    import json

    done = Path(sweep_dir) / "teachers" / "DONE.json"
    if not done.is_file():
        return []
    results = json.loads(done.read_text(encoding="utf-8")).get("results", [])
    return [{**r, "params_m": r["params"] / 1e6, "params_ne_m": r["params_non_embedding"] / 1e6,
             "tokens_per_param": r["train_tokens"] / r["params"]} for r in results]


def _busy_intervals(rows: list[dict[str, Any]]) -> list[tuple[float, float]]:
    """When cells were running: each done cell's [finish - its own seconds, finish] (POSIX
    seconds; ``updated`` is the machine's local time), overlaps merged. Unlike a driver's
    timer this survives interrupted runs."""
    spans = []
    for r in rows:
        if r["status"] != "done" or not r.get("updated"):
            continue
        end = datetime.fromisoformat(r["updated"]).timestamp()
        spans.append((end - (r.get("prune_s") or 0.0) - (r.get("distill_s") or 0.0), end))
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def busy_seconds(rows: list[dict[str, Any]]) -> float:
    """Wall time during which at least one cell of ``rows`` was running."""
    return sum(hi - lo for lo, hi in _busy_intervals(rows))


def compute_rows(sweep_dir: str | Path, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Compute spent, by stage: teacher pretraining, pruning (students made once per teacher
    and size), distilled cells, baselines; seconds are each stage's own wall time summed
    over its runs (runs in parallel workers overlap, so the sum can exceed the elapsed time)."""
    out = []
    teachers = teacher_rows(sweep_dir)
    if teachers:
        out.append({"stage": "teacher pretraining", "runs": len(teachers),
                    "tokens": sum(t["train_tokens"] for t in teachers),
                    "seconds": sum(t["seconds"] for t in teachers)})
    done = [r for r in rows if r["status"] == "done"]
    students = {r["student_path"]: r.get("prune_s") or 0.0 for r in done}
    out.append({"stage": "scoring + pruning", "runs": len(students), "tokens": 0,
                "seconds": sum(students.values())})
    for name, pick in (("distillation cells", lambda r: r["alpha"] < 1),
                       ("baseline cells (alpha = 1)", lambda r: r["alpha"] >= 1)):
        mine = [r for r in done if pick(r)]
        out.append({"stage": name, "runs": len(mine), "tokens": sum(r["tokens"] for r in mine),
                    "seconds": sum(r.get("distill_s") or 0.0 for r in mine)})
    out.append({"stage": "total", "runs": sum(r["runs"] for r in out),
                "tokens": sum(r["tokens"] for r in out),
                "seconds": sum(r["seconds"] for r in out)})
    return out
