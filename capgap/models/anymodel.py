"""Load and save whatever a capgap stage produced: HF folders, pruned models, run folders.

Stages hand models to each other by path. A path may be a standard HF checkpoint, a
global-allocation pruned model (``capgap_pruning.json``: per-layer shapes no vanilla config
can express), or a finished capgap run folder whose artefact lives in ``model/``. These two
functions hide that difference so no stage has to care.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM

from capgap.models import pruned
from capgap.models.io import load_model, save_model


def resolve_model_path(path_or_name: str | Path) -> str:
    """A run folder resolves to its ``model/``; anything else is returned unchanged."""
    path = Path(path_or_name)
    if path.is_dir() and not (path / "config.json").exists() and (path / "model").is_dir():
        return str(path / "model")
    return str(path_or_name)


def has_per_layer_shapes(path_or_name: str | Path) -> bool:
    """Whether the model at ``path_or_name`` (or a run folder's) is in capgap's per-layer
    format, which plain ``AutoModelForCausalLM.from_pretrained`` cannot load."""
    return pruned.has_per_layer_shapes(resolve_model_path(path_or_name))


def load_any_model(path_or_name: str | Path, dtype: Any = None) -> tuple[nn.Module, Any]:
    """(model, tokenizer) from an HF folder/hub name, a pruned model, or a run folder."""
    target = resolve_model_path(path_or_name)
    if has_per_layer_shapes(target):
        model, tokenizer = pruned.load_pruned(target)
        return (model.to(dtype) if dtype is not None else model), tokenizer
    return load_model(target, dtype=dtype)


def model_skeleton(path_or_name: str | Path) -> nn.Module:
    """The model at ``path_or_name`` for reading its shapes (FLOPs, sizes): built on the meta
    device from its config, no weights read, unless it has per-layer shapes (loaded whole:
    its config.json is the zero-padded equivalent, not its real shape)."""
    target = resolve_model_path(path_or_name)
    if has_per_layer_shapes(target):
        return pruned.load_pruned(target)[0]
    config = AutoConfig.from_pretrained(target)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def save_any_model(model: nn.Module, tokenizer: Any, out_dir: str | Path,
                   overwrite: bool = False) -> Path:
    """Save ``model`` in the format that reloads it exactly (see module docstring)."""
    if getattr(model, "capgap_pruning", None) is not None:
        return pruned.save_pruned_model(model, tokenizer, out_dir, export="auto",
                                        overwrite=overwrite)
    return save_model(model, tokenizer, out_dir, overwrite=overwrite)
