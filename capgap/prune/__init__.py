"""Structured pruning: score heads, FFN neurons, hidden width and layers by a named method
(expressiveness, activation, Taylor, Block Influence, magnitude, random), cut to a size.

See ``capgap/prune/README.md``. Public API::

    from capgap.prune import score, prune, save_pruned, load_pruned

What a pruned model keeps, its slicing and its formats on disk live in
:mod:`capgap.models.pruned` (re-exported here). Names are imported on first use (torch
loads then), so the method registry (:mod:`capgap.prune.methods`) and ``capgap --help``
stay fast.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "ParamTable": "capgap.models.arch",
    "KeepPlan": "capgap.models.pruned",
    "export_vanilla": "capgap.models.pruned",
    "load_pruned": "capgap.models.pruned",
    "materialize": "capgap.models.pruned",
    "PruneResult": "capgap.prune.api",
    "check": "capgap.prune.api",
    "prune": "capgap.prune.api",
    "save_pruned": "capgap.prune.api",
    "score": "capgap.prune.api",
    "MaskSet": "capgap.prune.masks",
    "attach": "capgap.prune.masks",
    "METHODS": "capgap.prune.methods",
    "get_method": "capgap.prune.methods",
    "Scores": "capgap.prune.scores",
    "baseline_scores": "capgap.prune.scores",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'capgap.prune' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
