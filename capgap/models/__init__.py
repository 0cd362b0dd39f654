"""Architectures, micro model families, loading, saving and size counting.

* :mod:`capgap.models.family` — YAML size ladders → standard transformers configs.
* :mod:`capgap.models.arch`   — THE architecture registry (one adapter per family: layout,
  shapes, parameter and FLOP counts, config rewrite), :func:`build_model`.
* :mod:`capgap.models.io`     — :func:`load_model` / :func:`save_model` / :func:`check_tokenizer_fits`.
* :mod:`capgap.models.params` — THE size definition (:func:`count_params`).
* :mod:`capgap.models.smollm2` — the one real pretrained model available offline.

Names are imported lazily so ``import capgap.models`` does not import transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

from capgap.models.params import ParamCount, count_params, count_params_from_config

_LAZY = {
    "ATTN_IMPLEMENTATION": "arch",
    "FAMILIES": "arch",
    "adapter_for": "arch",
    "build_model": "arch",
    "Family": "family",
    "list_families": "family",
    "load_family": "family",
    "check_tokenizer_fits": "io",
    "load_config": "io",
    "load_model": "io",
    "load_tokenizer": "io",
    "save_model": "io",
    "convert_smollm2": "smollm2",
}

__all__ = ["ParamCount", "count_params", "count_params_from_config", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"capgap.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'capgap.models' has no attribute {name!r}")
