"""Saving and loading pruned models: a vanilla checkpoint when a config can hold the shape,
capgap's per-layer format when it cannot.

* ``vanilla`` — a uniform plan is an ordinary HF checkpoint (``save_pretrained``);
  ``AutoModelForCausalLM.from_pretrained`` loads it anywhere.
* ``capgap`` — a global plan keeps different head/neuron counts per layer, which no vanilla
  config expresses. We save ``config.json`` (the vanilla config of the exact zero-padded
  equivalent, :func:`~capgap.models.pruned.shrink.export_vanilla`, so AutoConfig/AutoTokenizer
  can read the folder), ``capgap_model.safetensors`` (the small weights; a different name so
  vanilla model loaders fail loudly instead of mis-loading) and ``capgap_pruning.json`` (base
  config, per-layer kept counts and the kept indices in the original numbering).
  :func:`load_pruned` rebuilds by constructing the *vanilla* base model on the meta device,
  shrinking it with the same code, and loading the weights — no custom modeling code, no
  ``trust_remote_code``; the result works with lm-eval's ``HFLM(pretrained=model)``.

Every export also writes ``prune_plan.json`` (which heads, neurons, hidden dims and layers of
the original were kept) and ``prune_report.json``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import AutoModelForCausalLM, AutoTokenizer, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from capgap.errors import CapgapError
from capgap.io import atomic_dir, write_json
from capgap.models.arch import adapter_for
from capgap.models.io import unique_tensors
from capgap.models.params import count_params
from capgap.models.pruned.plan import KeepPlan
from capgap.models.pruned.shrink import (
    export_vanilla,
    fill_weights,
    is_tied,
    materialize,
    padded_shape,
)

PRUNED_FORMAT = "capgap-pruned/1"
WEIGHTS_NAME = "capgap_model.safetensors"
META_NAME = "capgap_pruning.json"
EXPORTS = ("auto", "capgap", "vanilla")
PLAN_NAME = "prune_plan.json"  # kept indices in the original numbering, every export
REPORT_NAME = "prune_report.json"


def config_from_dict(data: dict) -> PretrainedConfig:
    model_type = data.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise CapgapError(f"unknown model_type '{model_type}' in saved config")
    return CONFIG_MAPPING[model_type].from_dict(dict(data))


def has_per_layer_shapes(path: str | Path) -> bool:
    """Whether the folder ``path`` holds capgap's per-layer format, which plain
    ``AutoModelForCausalLM.from_pretrained`` cannot load."""
    return (Path(path) / META_NAME).is_file()


def save_pruned_model(
    model: nn.Module,
    tokenizer: object | None,
    out_dir: str | Path,
    export: str = "auto",
    overwrite: bool = False,
    report: dict | None = None,
    extra: Callable[[Path], None] | None = None,
) -> Path:
    """Write a pruned ``model`` (one :func:`materialize` made, possibly trained since), its
    tokenizer, ``prune_report.json`` (``report`` plus the export) and ``prune_plan.json``
    into ``out_dir``, atomically; ``extra(folder)`` may add files before the folder appears.

    ``export``: ``auto`` — vanilla HF checkpoint for uniform plans, capgap format for global
    ones; ``vanilla`` — always a vanilla checkpoint (global plans zero-padded, exact);
    ``capgap`` — always the capgap format.
    """
    info = getattr(model, "capgap_pruning", None)
    if info is None:
        raise CapgapError("not a model made by capgap.prune (no pruning record); save it with save_pretrained")
    if export not in EXPORTS:
        raise CapgapError(f"unknown export '{export}'; choose from {', '.join(EXPORTS)}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise CapgapError(f"{out_dir} exists; pass overwrite=True (--overwrite) to replace it")
    plan = KeepPlan.from_dict(info["plan"])
    vanilla = info["allocation"] == "uniform" and min(plan.groups) > 0 and min(plan.ffn) > 0
    fmt = export if export != "auto" else ("vanilla" if vanilla else "capgap")
    report = dict(report or {})
    report["export"] = {"format": fmt}
    if fmt == "vanilla" and not vanilla:
        model = export_vanilla(model, plan, config_from_dict(info["base_config"]))
        padded = count_params(model)
        report["export"] = {"format": "vanilla-padded", "params_total": padded.total, "params_non_embedding": padded.non_embedding}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        if fmt == "vanilla":
            model.save_pretrained(tmp)
        else:
            save_capgap_format(model, tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if extra is not None:
            extra(tmp)
        write_json(tmp / REPORT_NAME, report)
        write_json(tmp / PLAN_NAME, {"base_config": info["base_config"], "plan": info["plan"]})
    return out_dir


def load_pruned(path: str | Path) -> tuple[nn.Module, object | None]:
    """Load a model written by :func:`save_pruned_model` (either format) and its tokenizer."""
    path = Path(path)
    if not path.is_dir():
        raise CapgapError(f"no pruned model at {path}")
    if has_per_layer_shapes(path):
        model = load_capgap_format(path)
    else:
        model = AutoModelForCausalLM.from_pretrained(path)
    tokenizer = AutoTokenizer.from_pretrained(path) if (path / "tokenizer_config.json").exists() else None
    return model, tokenizer


def save_capgap_format(model: nn.Module, out: Path) -> None:
    """Write the capgap format of a pruned ``model`` into the (temporary) folder ``out``."""
    adapter = adapter_for(model)
    info = model.capgap_pruning
    plan = KeepPlan.from_dict(info["plan"])
    # config.json: the vanilla config of the exact zero-padded equivalent (export_vanilla),
    # so AutoConfig/AutoTokenizer read the folder; the weights file has another name, so a
    # vanilla model loader fails loudly instead of mis-loading. Trap: the in-memory config
    # (true hidden width, per-layer maxima) may fail vanilla validation (hidden % heads).
    base = config_from_dict(info["base_config"])
    d_pad, g_pad, f_pad = padded_shape(adapter, adapter.geometry(base), plan)
    padded = adapter.vanilla_config(base, d_pad, g_pad, f_pad, plan.layers, eps_scale=plan.d / d_pad)
    padded.capgap_format = f"{PRUNED_FORMAT}: per-layer shapes, see {META_NAME}; load with capgap.prune.load_pruned"
    padded.to_json_file(out / "config.json")
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(out)
    save_file(unique_tensors(model.state_dict()), str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    meta = {
        "format": PRUNED_FORMAT,
        "allocation": info["allocation"],
        "model_type": model.config.model_type,
        "tied_embeddings": is_tied(model, adapter),
        "plan": info["plan"],
        "base_config": info["base_config"],
        "load_with": "capgap.prune.load_pruned(dir)",
    }
    (out / META_NAME).write_text(json.dumps(meta, indent=2) + "\n")
    (out / "README.md").write_text(_README)


_README = """# capgap pruned model (per-layer shapes)

This model keeps a different number of attention heads / FFN neurons in each layer, which a
vanilla Hugging Face config cannot express. Load it with

    from capgap.models.pruned import load_pruned
    model, tokenizer = load_pruned("THIS_DIR")

It is a standard transformers model class with smaller Linear/Conv1D modules (no custom
code). For lm-evaluation-harness: `HFLM(pretrained=model, tokenizer=tokenizer)`.
Plain `AutoModelForCausalLM.from_pretrained(THIS_DIR)` cannot load it. For a vanilla
checkpoint that it can (same logits, every layer zero-padded to the widest):
`capgap convert pruned THIS_DIR --out DIR` (or `capgap prune ... --export vanilla`).
`capgap_pruning.json` records the base config and the kept heads/neurons/hidden dims.
"""


def load_capgap_format(path: Path) -> nn.Module:
    meta = json.loads((path / META_NAME).read_text())
    if meta.get("format") != PRUNED_FORMAT:
        raise CapgapError(f"{path / META_NAME} is not a {PRUNED_FORMAT} file")
    base = config_from_dict(meta["base_config"])
    plan = KeepPlan.from_dict(meta["plan"])
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(base)
    adapter = adapter_for(model)
    tied = is_tied(model, adapter)
    rotary_config = copy.deepcopy(base)
    model = materialize(model, KeepPlan.from_counts(plan.layers, plan.d, plan.groups, plan.ffn), meta["allocation"], inplace=True)
    fill_weights(model, load_file(str(path / WEIGHTS_NAME)), adapter, tied, rotary_config)
    model.capgap_pruning = {k: meta[k] for k in ("allocation", "base_config", "plan")}
    return model
