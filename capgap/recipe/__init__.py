"""The MiniMA recipe at LLM scale: teacher -> pruned -> distilled -> instruction-tuned student.

``shapes`` chooses the student's shape, ``minima`` runs the three stages (``run_minima``,
``capgap recipe minima``), ``mixture`` mixes corpora by weight, ``sft`` tunes on chat data
with the loss on assistant turns only. Names are imported on first use, so importing one
submodule does not pull in the distillation engine.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "MinimaConfig": "capgap.recipe.minima",
    "run_minima": "capgap.recipe.minima",
    "MixtureSource": "capgap.recipe.mixture",
    "mixture_corpus": "capgap.recipe.mixture",
    "normalised_weights": "capgap.recipe.mixture",
    "SFTConfig": "capgap.recipe.sft",
    "encode_chat": "capgap.recipe.sft",
    "instruction_tune": "capgap.recipe.sft",
    "Shape": "capgap.recipe.shapes",
    "minima_shape": "capgap.recipe.shapes",
    "reshape_config": "capgap.recipe.shapes",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'capgap.recipe' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
