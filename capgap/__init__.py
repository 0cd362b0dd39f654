"""capgap: the law of capacity gap in language-model distillation, as a toolkit.

Pipeline (one subpackage each): data -> models -> prune -> distill -> evaluate -> sweep ->
study -> law -> report, with ``train`` (the shared loop) and ``results`` (the torch-free rows
and their definitions) beside them. Every stage is reachable from here and loads on first
use, so ``import capgap`` (or ``capgap.results``, ``capgap.law``) costs no torch::

    import capgap
    scores = capgap.score(model, batches)                        # capgap.prune
    student = capgap.prune.prune(model, scores, sparsity=0.6)
    capgap.distill.distill(capgap.DistillConfig(...), "runs/kd")  # capgap.distill.engine
    capgap.run_sweep(cfg, "runs/sweep")                          # capgap.sweep
    law = capgap.fit_source("runs/sweep")                        # capgap.law
    capgap.predict(law, 3e9, teachers=[1.3e9, 7e9])

``prune`` and ``distill`` name their subpackages here (as ``law`` and ``sweep`` do), so
their functions are ``capgap.prune.prune`` and ``capgap.distill.distill``.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBPACKAGES = ("data", "models", "prune", "distill", "evaluate", "train", "sweep", "study",
                "law", "results", "report", "recipe", "plan", "units")

_API = {
    "load_any_model": "capgap.models.anymodel",
    "save_any_model": "capgap.models.anymodel",
    "PretrainConfig": "capgap.train.pretrain",
    "pretrain": "capgap.train.pretrain",
    "score": "capgap.prune",
    "save_pruned": "capgap.prune",
    "load_pruned": "capgap.models.pruned",
    "DistillConfig": "capgap.distill.engine",
    "evaluate_model": "capgap.evaluate.api",
    "evaluate_tasks": "capgap.evaluate.lm_eval",
    "SweepConfig": "capgap.sweep",
    "run_sweep": "capgap.sweep",
    "StudyConfig": "capgap.study",
    "run_study": "capgap.study",
    "fit_source": "capgap.law",
    "predict": "capgap.law",
    "predict_range": "capgap.law",
    "plot_law": "capgap.law",
    "read_rows": "capgap.results",
    "findings": "capgap.results",
    "build_report": "capgap.report",
    "summary_table": "capgap.report",
}

__all__ = ["__version__", *_SUBPACKAGES, *_API]


def __getattr__(name: str) -> Any:
    if name in _SUBPACKAGES:
        return importlib.import_module(f"capgap.{name}")
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'capgap' has no attribute {name!r}")
