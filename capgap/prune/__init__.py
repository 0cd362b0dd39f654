"""Structured pruning: score heads, FFN neurons, hidden width and layers by a named method
(expressiveness, activation, Taylor, Block Influence, magnitude, random), cut to a size.

See ``capgap/prune/README.md``. Public API::

    from capgap.prune import score, prune, save_pruned, load_pruned

Names are imported on first use (torch loads then), so the method registry
(:mod:`capgap.prune.methods`) and ``capgap --help`` stay fast.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_LAZY = {
    "ParamTable": "capgap.models.arch",
    "PruneResult": "capgap.prune.api",
    "check": "capgap.prune.api",
    "load_pruned": "capgap.prune.api",
    "prune": "capgap.prune.api",
    "save_pruned": "capgap.prune.api",
    "score": "capgap.prune.api",
    "MaskSet": "capgap.prune.masks",
    "attach": "capgap.prune.masks",
    "export_vanilla": "capgap.prune.materialize",
    "materialize": "capgap.prune.materialize",
    "METHODS": "capgap.prune.methods",
    "get_method": "capgap.prune.methods",
    "Plan": "capgap.prune.plan",
    "Scores": "capgap.prune.scores",
    "baseline_scores": "capgap.prune.scores",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'capgap.prune' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


class _Package(types.ModuleType):
    """Trap: importing the submodule ``materialize`` binds it as this package's attribute,
    hiding the function of the same name from ``from capgap.prune import materialize``.
    The binding is skipped, so the name resolves (lazily) to the function, as it always has."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _LAZY.get(name) == value.__name__:
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
