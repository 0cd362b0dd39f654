"""The sweep driver: plan the grid, do the shared work once, run the cells, fit the law.

Re-running the same command is the resume: a cell counts as done only when its row says
done *and* its run folder holds ``DONE.json``; a finished folder whose row was never
written (driver killed) is recorded without re-running; anything else runs again, resuming
its run folder from the last checkpoint.

With ``adaptive.enabled`` the driver runs rounds of the cells that
:func:`capgap.results.adaptive.select` chooses from the store (each round's cells grouped in
lockstep like the full grid's) until it chooses none, writing its state and why each
teacher was left out to ``adaptive.json`` and the log; a resumed run recomputes its choices
from the store.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capgap import config as cfgmod
from capgap.errors import CapgapError
from capgap.io import write_json
from capgap.law import fit_source
from capgap.results.adaptive import Selection, select
from capgap.results.rows import CellRow
from capgap.results.store import DB_NAME, LAW_NAME, Store, read_rows
from capgap.runs import RunDir, is_complete
from capgap.sweep.backends import execute, threads_per_worker
from capgap.sweep.cell import cell_payload, task_payload
from capgap.sweep.config import SweepConfig
from capgap.sweep.flops import CellFlops
from capgap.sweep.grid import CellSpec, build_grid, cell_key
from capgap.sweep.lock import driver_lock
from capgap.sweep.students import (
    prepare_students,
    resolve_teachers,
    score_teachers,
    student_dir,
    student_meta,
)

ADAPTIVE_NAME = "adaptive.json"  # an adaptive sweep's choices and the teachers it left out


@dataclass
class SweepSummary:
    """What one invocation did."""

    out: Path
    cells: int
    skipped: int
    ran: int
    failed: int
    seconds: float
    law: dict[str, Any] = field(default_factory=dict)
    left_out: int = 0
    """Cells the adaptive selection did not run (0 for the full grid)."""

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["law_status"] = self.law.get("status")
        d.pop("law")
        return d


def run_sweep(cfg: SweepConfig, out: str | Path, *, workers: int | None = None,
              backend: str = "local", progress: bool = True) -> SweepSummary:
    """Run (or resume) the sweep of ``cfg`` in ``out``; see the module docstring.
    ``workers`` (default: ``cfg.workers``) cells run at once."""
    start = time.perf_counter()
    cfg = cfgmod.checked(cfg)
    workers = cfg.workers if workers is None else workers
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with driver_lock(out):
        return _run_locked(cfg, out, workers, backend, progress, start)


def _run_locked(cfg: SweepConfig, out: Path, workers: int, backend: str, progress: bool,
                start: float) -> SweepSummary:
    cfgmod.dump(cfg, out / "sweep.yaml")
    teachers = score_teachers(cfg, out, resolve_teachers(cfg, out,
                                                         workers if backend == "local" else 1))
    grid = {cell_key(cfg, c): c for c in build_grid(cfg, teachers)}
    store = Store(out / DB_NAME)
    try:
        flops = CellFlops(cfg, out)
        if cfg.adaptive.enabled:
            skipped, ran, failed = _run_adaptive(cfg, out, grid, store, workers, backend,
                                                 progress, flops)
        else:
            todo = _plan(store, out, grid, flops)
            failed = _run_cells(cfg, out, grid, store, todo, workers, backend, progress, flops)
            skipped, ran = len(grid) - len(todo), len(todo) - failed
    finally:
        store.close()
    law = fit_sweep_law(cfg, out)
    return SweepSummary(out, len(grid), skipped, ran, failed,
                        round(time.perf_counter() - start, 1), law,
                        len(grid) - skipped - ran - failed)


def _run_cells(cfg: SweepConfig, out: Path, grid: dict[str, CellSpec], store: Store,
               keys: list[str], workers: int, backend: str, progress: bool,
               flops: CellFlops) -> int:
    """Make the students of the cells ``keys``, run the cells in lockstep groups and record
    them; return how many failed."""
    todo = sorted(keys, key=lambda k: run_order(grid[k]))
    prepare_students(cfg, out, [grid[k] for k in todo])
    for key in todo:
        store.plan(key, _student_fields(out, grid[key], flops))
    threads = threads_per_worker(workers)
    tasks = [task_payload([cell_payload(cfg, grid[k], k, student_dir(out, grid[k]),
                                        out / "cells" / k, threads) for k in group])
             for group in lockstep_groups(cfg, grid, todo)]
    return _execute(store, tasks, workers, backend, progress)


def _run_adaptive(cfg: SweepConfig, out: Path, grid: dict[str, CellSpec], store: Store,
                  workers: int, backend: str, progress: bool,
                  flops: CellFlops) -> tuple[int, int, int]:
    """Rounds of the cells the adaptive selection chooses, until it chooses none; a cell
    that fails is not chosen again in this run. Returns (skipped, ran, failed) cells."""
    for key in _plan(store, out, grid, flops, every=False):
        if (store.get(key) or {}).get("status") == "done":  # its run folder is unfinished
            store.reset(key)
    cells = [CellRow.from_mapping({**describe(c, out, k), "key": k}) for k, c in grid.items()]
    skipped = sum(CellRow.from_mapping(store.get(k) or {}).finished for k in grid)
    failed: set[str] = set()
    ran, logged, rounds = 0, set(), 0
    while True:
        sel = select(cells, read_rows(out), cfg.adaptive, failed)
        write_json(out / ADAPTIVE_NAME, {"rule": cfgmod.to_dict(cfg.adaptive),
                                         "rounds_this_run": rounds, **sel.to_dict()})
        _log_dropped(sel, logged)
        if not sel.next:
            return skipped, ran, len(failed)
        rounds += 1
        print(f"adaptive round {rounds}: {len(sel.next)} cells ("
              + "; ".join(f"{_curve_label(c.setting)}: {', '.join(c.next)}"
                          for c in sel.curves if c.next) + ")", flush=True)
        for key in sel.next:
            store.plan(key, describe(grid[key], out, key))
        _run_cells(cfg, out, grid, store, sel.next, workers, backend, progress, flops)
        now = {k for k in sel.next if CellRow.from_mapping(store.get(k) or {}).finished}
        ran += len(now)
        failed |= set(sel.next) - now


def _log_dropped(sel: Selection, logged: set[tuple]) -> None:
    """One log line per teacher the selection newly leaves out, with its reason."""
    for c in sel.curves:
        for d in c.dropped:
            key = (str(c.setting), d.teacher)
            if key not in logged:
                logged.add(key)
                print(f"adaptive {_curve_label(c.setting)}: drop {d.teacher} ({d.reason})",
                      flush=True)


def _curve_label(setting: dict[str, Any]) -> str:
    return (f"S {setting['student_target'] / 1e6:.3g}M {setting['objective']} "
            f"{setting['allocation']} {setting['init']} {setting['tokens']} tok")


def run_order(cell: CellSpec) -> tuple:
    """Cells run seed by seed, smallest budget first, then by student and teacher size: an
    interrupted sweep leaves whole (seed, budget) slices done, each enough to fit a law."""
    return (cell.seed, cell.tokens, cell.student_target, cell.teacher.params, cell.objective,
            cell.allocation, cell.init)


def lockstep_groups(cfg: SweepConfig, grid: dict[str, CellSpec], todo: list[str]) -> list[list[str]]:
    """The cells to train together: those sharing a teacher and seed, and with
    ``cfg.lockstep_budgets`` off a budget too (every other setting is the sweep's own), at
    most ``cfg.lockstep_max`` at a time; one cell per group when ``cfg.lockstep`` is off.
    Groups run seed by seed (then smallest budget first when budgets are apart, so whole
    slices finish first, as cells do) and the largest teacher's first: the longest groups
    start early, so workers do not idle while the last one finishes."""
    if not cfg.lockstep:
        return [[k] for k in todo]
    groups: dict[tuple, list[str]] = {}
    for key in todo:
        c = grid[key]
        budget = 0 if cfg.lockstep_budgets else c.tokens
        groups.setdefault((c.seed, budget, -c.teacher.params, c.teacher.path), []).append(key)
    size = cfg.lockstep_max or len(todo)
    return [keys[i:i + size] for slot in sorted(groups) for keys in [groups[slot]]
            for i in range(0, len(keys), size)]


def _plan(store: Store, out: Path, grid: dict[str, CellSpec], flops: CellFlops,
          every: bool = True) -> list[str]:
    """Record every cell (with ``every`` off, only those already in the store or on disk:
    an adaptive sweep records a cell when it chooses it); return the keys that still need
    running."""
    todo = []
    for key, cell in grid.items():
        if not every and store.get(key) is None and not (out / "cells" / key).exists():
            continue
        store.plan(key, describe(cell, out, key))
        row = store.get(key) or {}
        finished = is_complete(out / "cells" / key)
        if finished and row.get("status") == "done":
            continue
        if finished:  # the worker finished but the driver died before recording it
            store.plan(key, _student_fields(out, cell, flops))
            store.mark_done(key, _recorded_result(out / "cells" / key))
            continue
        todo.append(key)
    return todo


def describe(cell: CellSpec, out: Path, key: str) -> dict[str, Any]:
    """The row fields known before the cell runs."""
    t = cell.teacher
    return {"teacher": t.name, "teacher_params": t.params, "teacher_params_ne": t.params_ne,
            "teacher_loss": t.loss,
            "student_target": cell.student_target, "objective": cell.objective,
            "alpha": cell.alpha, "allocation": cell.allocation, "init": cell.init,
            "tokens": cell.tokens, "seed": cell.seed, "teacher_path": t.path,
            "student_path": str(student_dir(out, cell)), "cell_dir": str(out / "cells" / key),
            "pruned_from": cell.pruned_from.name}


def _student_fields(out: Path, cell: CellSpec, flops: CellFlops) -> dict[str, Any]:
    """The row fields known once the cell's student is made: its size and the cell's FLOPs."""
    meta = student_meta(out, cell)
    return {**{k: meta[k] for k in ("student_params", "student_params_ne", "sparsity", "prune_s")},
            **flops(cell)}


def _recorded_result(cell_dir: Path) -> dict[str, Any]:
    r = RunDir(cell_dir, True, True).summary()["result"]
    return {"val_loss": r["val_loss"], "val_ppl": r["val_ppl"], "val_bpb": r["val_bpb"],
            "tokens_per_s": r["tokens_per_s"], "model_dir": r["model_dir"],
            "distill_s": r["seconds"]}


def _execute(store: Store, tasks: list[dict[str, Any]], workers: int, backend: str,
             progress: bool) -> int:
    """Run the tasks with a progress bar over cells (done / running / left, ETA), or without
    one a line per finished cell (for logs of background runs); count failed cells."""
    from tqdm.auto import tqdm

    if not tasks:
        return 0
    cells = {t["key"]: [c["key"] for c in t["cells"]] for t in tasks}
    total = sum(len(v) for v in cells.values())
    bar = tqdm(total=total, unit="cell", desc="sweep", disable=not progress)
    state = {"running": 0, "failed": 0, "finished": 0}  # a disabled tqdm counts nothing
    start = time.perf_counter()

    def on_start(task: dict[str, Any]) -> None:
        for key in cells[task["key"]]:
            store.mark_running(key)
        state["running"] += len(cells[task["key"]])
        _postfix(bar, state, total)

    def on_result(r: dict[str, Any]) -> None:
        outcomes = r.get("results") or [{"key": k, "error": r.get("error", "no result")}
                                        for k in cells[r["key"]]]  # the worker died
        for o in outcomes:
            _record(store, o, state, bar, r["key"])
            if not progress:
                print(cell_line(store.get(o["key"]) or {}, state["finished"], total,
                                time.perf_counter() - start), flush=True)
        _postfix(bar, state, total)

    try:
        execute(tasks, workers=workers, backend=backend, on_start=on_start, on_result=on_result)
    finally:
        bar.close()
    return state["failed"]


def _record(store: Store, outcome: dict[str, Any], state: dict[str, int], bar: Any,
            task: str | None = None) -> None:
    """Write one cell's outcome (and the task that ran it) to the database and count it."""
    state["running"] -= 1
    if "error" in outcome:
        store.mark_failed(outcome["key"], outcome["error"])
        state["failed"] += 1
        bar.write(f"cell {outcome['key']} failed: {outcome['error'].splitlines()[-1]}")
    else:
        store.mark_done(outcome["key"], outcome["result"] | {"task": task})
    bar.update(1)
    state["finished"] += 1


def cell_line(row: dict[str, Any], done: int, total: int, elapsed: float) -> str:
    """``[12/56 3:04 ETA 10:12] T3 -> 0.3M, soft_ce, 150,000 tok, seed 0: val 5.123 (55 s)``;
    the ETA assumes the cells left cost what the finished ones did on average."""
    def clock(s: float) -> str:
        return f"{int(s // 3600)}:{int(s % 3600 // 60):02d}"

    what = "baseline" if (row.get("alpha") or 0) >= 1 else row.get("objective")
    result = (f"val {row['val_loss']:.4f} ({row.get('distill_s') or 0:.0f} s)"
              if row.get("status") == "done" else f"failed: {row.get('error') or ''}".strip())
    eta = elapsed / max(done, 1) * (total - done)
    return (f"[{done}/{total} {clock(elapsed)} ETA {clock(eta)}] {row.get('teacher')} -> "
            f"{(row.get('student_target') or 0) / 1e6:.3g}M, {what}, {row.get('tokens') or 0:,} "
            f"tok, seed {row.get('seed')}: {result.splitlines()[-1] if result else ''}")


def _postfix(bar: Any, state: dict[str, int], total: int) -> None:
    left = total - state["finished"] - state["running"]
    bar.set_postfix(running=state["running"], left=left, failed=state["failed"], refresh=False)


def primary_where(cfg: SweepConfig) -> dict[str, Any]:
    """The setting the headline law is fitted on: the first objective and allocation, the
    pruned init when swept, the largest budget (where the optimum is most informative)."""
    init = "pruned" if "pruned" in cfg.students.init else cfg.students.init[0]
    return {"objective": cfg.objectives[0], "allocation": cfg.students.allocations[0],
            "init": init, "tokens": max(cfg.tokens)}


def fit_sweep_law(cfg: SweepConfig, out: Path) -> dict[str, Any]:
    """Fit the law on the primary setting into ``law.json``, and every setting into
    ``laws/`` when the sweep has more than one. A fit that cannot run is recorded, not
    raised: an insufficient pilot is an honest result."""
    law = fit_setting(cfg, out, primary_where(cfg))
    write_json(out / LAW_NAME, law)
    settings = all_settings(cfg)
    for where in settings if len(settings) > 1 else []:
        name = "-".join(str(v) for v in where.values())
        write_json(out / "laws" / f"{name}.json", fit_setting(cfg, out, where))
    return law


def fit_setting(cfg: SweepConfig, out: Path, where: dict[str, Any],
                size: str = "total") -> dict[str, Any]:
    """The law of one setting of the sweep in ``out``; a fit that cannot run is recorded."""
    # done rows only: a cell whose student never got made has no sizes to read
    return fit_rows(read_rows(out, status="done"), where, size, cfg.law_bootstrap,
                    str(out / DB_NAME))


def fit_rows(rows: list[dict[str, Any]], where: dict[str, Any], size: str, n_boot: int,
             source: str) -> dict[str, Any]:
    """The law of the cells ``rows`` selected by ``where``; a fit that cannot run is
    recorded as ``{"status": "error", "reason": ...}`` rather than raised."""
    if not rows:
        return {"status": "pending", "reason": "no finished cells yet",
                "selection": {"where": where}}
    try:
        law = fit_source(rows, where=where, size=size, n_boot=n_boot)
        law["selection"] |= {"source": source, "source_kind": "sqlite"}
        return law
    except CapgapError as e:
        return {"status": "error", "reason": str(e), "selection": {"where": where}}


def all_settings(cfg: SweepConfig) -> list[dict[str, Any]]:
    return [{"objective": o, "allocation": a, "init": i, "tokens": t}
            for o in cfg.objectives for a in cfg.students.allocations
            for i in cfg.students.init for t in cfg.tokens]
