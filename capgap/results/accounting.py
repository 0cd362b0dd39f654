"""What a sweep spent and has left: cells by status, compute by stage, busy wall time, an
estimate of the time the unfinished cells still need, the teachers it pretrained, and the
model FLOPs the finished cells recorded."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from capgap.results.rows import CellRow, as_rows

TEACHERS_DONE = Path("teachers") / "DONE.json"  # a sweep's pretrained family, when it made one


def status_counts(rows: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in as_rows(rows):
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts


def left_seconds(rows: Iterable[Mapping[str, Any]], done: Iterable[Mapping[str, Any]]) -> float:
    """Worker-seconds the unfinished cells of ``rows`` should still take, each priced at the
    per-token cost of the most similar finished cells in ``done`` (baseline or distilled, then
    the same teacher and student size, else the same teacher, else any): an estimate for an
    ETA, not a promise."""
    finished = [r for r in as_rows(done) if r.status == "done" and r.tokens]
    total = 0.0
    for r in as_rows(rows):
        if r.status == "done" or not r.tokens:
            continue
        kind = [d for d in finished if d.distilled == r.distilled] or finished  # baselines run no teacher: priced apart
        for keys in (("teacher_params", "student_target"), ("teacher_params",), ()):
            like = [d for d in kind if all(d[k] == r[k] for k in keys)]
            if like:
                spent = sum((d.distill_s or 0.0) + (d.prune_s or 0.0) for d in like)
                total += r.tokens * spent / sum(d.tokens for d in like)
                break
    return total


def teacher_rows(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """The pretrained teachers (from ``teachers/DONE.json``): size, tokens, tokens/param.
    Empty when the sweep was given existing models."""
    done = Path(sweep_dir) / TEACHERS_DONE
    if not done.is_file():
        return []
    results = json.loads(done.read_text(encoding="utf-8")).get("results", [])
    return [{**r, "params_m": r["params"] / 1e6, "params_ne_m": r["params_non_embedding"] / 1e6,
             "tokens_per_param": r["train_tokens"] / r["params"]} for r in results]


GROUP_STAMP_S = 2.0
"""Members of one lockstep group are stamped as they are recorded, within about a second."""


def _busy_intervals(rows: list[CellRow]) -> list[tuple[float, float]]:
    """When cells were running: each done cell's [finish - its own seconds, finish] (POSIX
    seconds; ``updated`` is the machine's local time), overlaps merged. Unlike a driver's
    timer this survives interrupted runs. A lockstep group's members finish together and
    split its time (``distill_s``), so rows of one worker task (``task``; rows recorded
    before it existed: of one teacher and seed) stamped within :data:`GROUP_STAMP_S` of each
    other count as one span of their summed seconds."""
    def task(r: CellRow) -> tuple[str, int]:
        return (r.task, 0) if r.task else (f"{r.teacher_path}", r.seed or 0)

    done = sorted(((datetime.fromisoformat(r.updated).timestamp(), r) for r in rows
                   if r.status == "done" and r.updated), key=lambda er: (task(er[1]), er[0]))
    groups: list[list[tuple[float, CellRow]]] = []
    for end, r in done:
        last = groups[-1][-1] if groups else None
        if last and task(last[1]) == task(r) and end - last[0] <= GROUP_STAMP_S:
            groups[-1].append((end, r))
        else:
            groups.append([(end, r)])
    spans = []
    for members in groups:
        end = max(e for e, _ in members)
        own = (max(r.prune_s or 0.0 for _, r in members)
               + sum(r.distill_s or 0.0 for _, r in members))
        spans.append((end - own, end))
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(spans):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], hi))
        else:
            merged.append((lo, hi))
    return merged


def busy_seconds(rows: Iterable[Mapping[str, Any]]) -> float:
    """Wall time during which at least one cell of ``rows`` was running."""
    return sum(hi - lo for lo, hi in _busy_intervals(as_rows(rows)))


def compute_rows(sweep_dir: str | Path, rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Compute spent, by stage: teacher pretraining, pruning (students made once per teacher
    and size), distilled cells, baselines; seconds are each stage's own wall time summed
    over its runs (runs in parallel workers overlap, so the sum can exceed the elapsed time)."""
    out = []
    teachers = teacher_rows(sweep_dir)
    if teachers:
        out.append({"stage": "teacher pretraining", "runs": len(teachers),
                    "tokens": sum(t["train_tokens"] for t in teachers),
                    "seconds": sum(t["seconds"] for t in teachers)})
    done = [r for r in as_rows(rows) if r.status == "done"]
    students = {r.student_path: r.prune_s or 0.0 for r in done}
    out.append({"stage": "scoring + pruning", "runs": len(students), "tokens": 0,
                "seconds": sum(students.values())})
    for name, pick in (("distillation cells", lambda r: r.distilled),
                       ("baseline cells (alpha = 1)", lambda r: not r.distilled)):
        mine = [r for r in done if pick(r)]
        out.append({"stage": name, "runs": len(mine), "tokens": sum(r.tokens for r in mine),
                    "seconds": sum(r.distill_s or 0.0 for r in mine)})
    out.append({"stage": "total", "runs": sum(r["runs"] for r in out),
                "tokens": sum(r["tokens"] for r in out),
                "seconds": sum(r["seconds"] for r in out)})
    return out


def flops_spent(rows: Iterable[Mapping[str, Any]]) -> dict[str, float] | None:
    """Model FLOPs of the finished cells: ``alone``, their ``total_flops`` summed (each cell
    run by itself, scoring its teacher anew), and ``shared``, each teacher scored once and
    each teacher forward paid once per (teacher, budget, seed) slice, as lockstep groups
    without a size cap run them (cells of a slice share the batches, so that forward is one).
    None when a finished cell has no FLOPs (recorded before they were)."""
    done = [r for r in as_rows(rows) if r.finished]
    if not done or any(r.total_flops is None for r in done):
        return None
    scoring = {r.cut_from: r.prune_flops for r in done if r.prune_flops}
    forwards = {(r.teacher, r.tokens, r.seed): r.teacher_flops for r in done if r.teacher_flops}
    shared = (sum(r.student_flops for r in done) + sum(scoring.values())
              + sum(forwards.values()))
    return {"alone": sum(r.total_flops for r in done), "shared": shared}
