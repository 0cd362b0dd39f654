"""One cell, as a worker runs it: distil (or train, for a baseline) a student and evaluate it.

The worker gets a plain dict (picklable for process pools and Ray) and returns a plain dict;
it never writes the results database. Its run folder ``cells/<key>/`` follows the shared
run convention, so a cell killed mid-way resumes from its last checkpoint and is never
counted done before ``DONE.json`` exists.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any

from capgap import config as cfgmod
from capgap.sweep.config import SweepConfig
from capgap.sweep.grid import CellSpec, distill_settings


def cell_payload(cfg: SweepConfig, cell: CellSpec, key: str, student: Path, cell_dir: Path,
                 threads: int) -> dict[str, Any]:
    """Everything a worker needs to run ``cell``, as plain data."""
    settings = distill_settings(cfg, cell)
    settings["train"]["threads"] = settings["train"]["threads"] or threads
    distill = {"student": str(student),
               "teacher": None if cell.is_baseline else cell.teacher.path, **settings}
    return {"key": key, "cell_dir": str(cell_dir), "distill": distill, "threads": threads}


def run_cell(payload: dict[str, Any]) -> dict[str, Any]:
    """Run one cell; never raises (a failure comes back as ``{"error": ...}``)."""
    os.environ["CAPGAP_THREADS"] = str(payload["threads"])
    start = time.perf_counter()
    try:
        result = _distill(payload)
    except Exception as e:  # reported to the driver, which marks the cell failed
        tail = "".join(traceback.format_exception_only(type(e), e)).strip()
        return {"key": payload["key"], "error": tail}
    return {"key": payload["key"], "result": {
        "val_loss": result.val_loss, "val_ppl": result.val_ppl, "val_bpb": result.val_bpb,
        "student_params": result.student_params,
        "student_params_ne": result.student_params_non_embedding,
        "tokens_per_s": result.tokens_per_s, "model_dir": result.model_dir,
        "distill_s": round(time.perf_counter() - start, 3)}}


def _distill(payload: dict[str, Any]) -> Any:
    """Resume the cell's run folder; an unusable half-written folder is started afresh."""
    import torch

    from capgap.distill.engine import DistillConfig, distill
    from capgap.errors import CapgapError

    torch.set_num_threads(int(payload["threads"]))
    cfg = cfgmod.from_dict(DistillConfig, payload["distill"], where="cell")
    out = Path(payload["cell_dir"])
    try:
        return distill(cfg, out, resume=True)
    except CapgapError:
        if not out.exists():
            raise
        return distill(cfg, out, overwrite=True)
