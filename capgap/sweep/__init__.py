"""The teacher × student sweep: every (teacher, student size) pair pruned, distilled and
evaluated, with its no-teacher baseline, recorded in ``results.sqlite``.

    from capgap.sweep import SweepConfig, run_sweep
    summary = run_sweep(cfg, "runs/sweep", workers=2)   # re-run = resume

Modules: ``config`` (the YAML), ``grid`` (cells and their keys), ``students`` (shared work:
teachers, scores, pruned students), ``cell`` (one cell in a worker), ``backends`` (local
processes or Ray), ``runner`` (the driver). The rows live in :mod:`capgap.results.store`;
several sweeps sharing their teachers are a study (:mod:`capgap.study`).
"""

from capgap.results.store import COLUMNS, read_rows
from capgap.sweep.config import SweepConfig
from capgap.sweep.runner import SweepSummary, fit_sweep_law, run_sweep

__all__ = ["COLUMNS", "SweepConfig", "SweepSummary", "fit_sweep_law", "read_rows", "run_sweep"]
