"""What a worker runs: one cell, or a lockstep group of cells that share a teacher, seed and
budget (distil, or train for a baseline, each student and evaluate it).

The worker gets a plain dict (picklable for process pools and Ray) and returns a plain dict;
it never writes the results database. Each cell's run folder ``cells/<key>/`` follows the
shared run convention, so a cell killed mid-way resumes from its last checkpoint and is never
counted done before ``DONE.json`` exists. A group trains its students together
(:func:`capgap.distill.lockstep.distill_lockstep`: one teacher forward per batch for all).
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

import torch

from capgap import config as cfgmod
from capgap.distill.engine import DistillConfig, distill
from capgap.distill.lockstep import distill_lockstep
from capgap.errors import CapgapError
from capgap.sweep.config import SweepConfig
from capgap.sweep.grid import CellSpec, distill_settings

MOVABLE = ("student", "teacher")
"""A cell's model paths: its key fixes which teacher and student they are, so a resume after
the folders moved (a copied family, another spelling of ``--out``) keeps its checkpoints."""


def cell_payload(cfg: SweepConfig, cell: CellSpec, key: str, student: Path, cell_dir: Path,
                 threads: int) -> dict[str, Any]:
    """Everything a worker needs to run ``cell``, as plain data."""
    settings = distill_settings(cfg, cell)
    settings["train"]["threads"] = settings["train"]["threads"] or threads
    distill = {"student": str(student),
               "teacher": None if cell.is_baseline else cell.teacher.path, **settings}
    return {"key": key, "cell_dir": str(cell_dir), "distill": distill, "threads": threads}


def task_payload(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """One unit of work for a worker: ``cells`` (payloads of :func:`cell_payload`), trained
    together when there are several. Its key is its first cell's, prefixed ``group:``."""
    return {"key": f"group:{cells[0]['key']}", "cells": cells, "threads": cells[0]["threads"]}


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """Run a task's cells; never raises: ``{"key", "results": [{"key", "result" | "error"}]}``
    (a failure of the whole task, e.g. a model that does not load, fails each of its cells)."""
    os.environ["CAPGAP_THREADS"] = str(task["threads"])
    start = time.perf_counter()
    cells = task["cells"]
    try:
        outcomes = _distill(cells)
    except Exception as e:  # reported to the driver, which marks the cells failed
        outcomes = [e] * len(cells)
    seconds = _shares(time.perf_counter() - start, [p["distill"]["train"]["tokens"] for p in cells])
    return {"key": task["key"], "results": [_result(p["key"], o, s) for p, o, s
                                            in zip(cells, outcomes, seconds, strict=True)]}


def _shares(seconds: float, tokens: list[float]) -> list[float]:
    """A group's seconds split among its cells in proportion to their budgets (the steps
    each was trained for; equal budgets split evenly)."""
    total = sum(tokens)
    return [round(seconds * t / total, 3) for t in tokens]


def _result(key: str, outcome: Any, seconds: float) -> dict[str, Any]:
    if isinstance(outcome, BaseException):
        tail = "".join(traceback.format_exception_only(type(outcome), outcome)).strip()
        return {"key": key, "error": tail}
    return {"key": key, "result": {
        "val_loss": outcome.val_loss, "val_ppl": outcome.val_ppl, "val_bpb": outcome.val_bpb,
        "student_params": outcome.student_params,
        "student_params_ne": outcome.student_params_non_embedding,
        "tokens_per_s": outcome.tokens_per_s, "model_dir": outcome.model_dir,
        "distill_s": seconds}}


def _distill(cells: list[dict[str, Any]]) -> list[Any]:
    """Resume each cell's run folder (an unusable half-written one is started afresh): one
    cell alone, several in lockstep. Each outcome is a result or the cell's own error."""
    torch.set_num_threads(int(cells[0]["threads"]))
    jobs = [(cfgmod.from_dict(DistillConfig, p["distill"], where="cell"), Path(p["cell_dir"]))
            for p in cells]
    if len(jobs) > 1:
        return distill_lockstep(jobs, restart_unusable=True, progress=False,
                                relocatable=MOVABLE)
    cfg, out = jobs[0]
    try:
        return [distill(cfg, out, resume=True, relocatable=MOVABLE)]
    except CapgapError:
        if not out.exists():
            raise
        return [distill(cfg, out, overwrite=True)]
