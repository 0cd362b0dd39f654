"""The architecture registry: which Hugging Face families capgap handles, and how.

One :class:`Adapter` per family (:mod:`~capgap.models.arch.families`) holds everything a
stage needs to know about a layout: module names, the prunable shape (:class:`Geometry`),
what each weight axis is indexed by, the vanilla-config rewrite for a smaller shape, and,
through :class:`ParamTable`, parameter and matmul counts of any shape; FLOPs per token are
:class:`FlopShape` (:mod:`~capgap.models.arch.flops`, the one formula). Pruning,
the MiniMA shape rule, the compute planner and model loading all ask it; nothing else
lists supported architectures.

Every model capgap builds uses :data:`ATTN_IMPLEMENTATION`.
"""

from __future__ import annotations

import functools
import json

import torch
from transformers import AutoModelForCausalLM, PretrainedConfig, PreTrainedModel
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from capgap.models.arch.families import (
    ADAPTERS,
    FAMILIES,
    SUPPORTED,
    adapter_for,
    adapter_for_type,
    supported_table,
)
from capgap.models.arch.flops import FlopShape, flop_shape
from capgap.models.arch.layout import Adapter, Geometry, ParamTable, require_unpruned
from capgap.models.params import ParamCount

# "sdpa": PyTorch's fused attention. On CPU it is deterministic run to run (checked in
# tests/models/test_arch.py) and agrees with "eager" to float tolerance, and it is what
# users get on GPU by default. A family that transformers runs only eagerly says so in its
# adapter (Gemma 2); :func:`attn_implementation` is what every model build asks.
ATTN_IMPLEMENTATION = "sdpa"

__all__ = [
    "ADAPTERS", "ATTN_IMPLEMENTATION", "FAMILIES", "SUPPORTED", "Adapter", "FlopShape",
    "Geometry", "ParamTable", "adapter_for", "adapter_for_type", "attn_implementation",
    "build_model", "count_shape", "flop_shape", "geometry", "matmul_params", "param_table",
    "require_unpruned", "supported_table",
]


def build_model(config: PretrainedConfig) -> PreTrainedModel:
    """A randomly initialised standard transformers causal LM for ``config``.

    Initialisation follows transformers (normal(0, initializer_range)); seed with
    ``torch.manual_seed`` first for reproducibility.
    """
    return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation(config))


def attn_implementation(config: PretrainedConfig) -> str:
    """The attention kernel capgap uses for ``config``'s family (sdpa unless it cannot)."""
    return adapter_for(config).attn_implementation


def geometry(config: PretrainedConfig) -> Geometry:
    """The prunable shape of ``config`` (CapgapError for an unsupported family)."""
    return adapter_for(config).geometry(config)


@functools.lru_cache(maxsize=64)
def _table(config_json: str) -> ParamTable:
    data = json.loads(config_json)
    config = CONFIG_MAPPING[data["model_type"]].from_dict(data)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return ParamTable.from_model(model, adapter_for(config))


def param_table(config: PretrainedConfig) -> ParamTable:
    """The :class:`ParamTable` of ``config`` (built once on the meta device, then cached)."""
    adapter_for(config)
    return _table(config.to_json_string(use_diff=False))


def count_shape(config: PretrainedConfig, geo: Geometry | None = None) -> ParamCount:
    """Parameters of ``config``'s family at the uniform shape ``geo`` (default: its own).

    ``geo`` keeps ``config``'s head_dim and GQA group; it sets depth, hidden, KV heads and FFN.
    """
    table = param_table(config)
    g = geo or table.geo
    return table.count(g.hidden, [g.n_kv] * g.n_layers, [g.ffn] * g.n_layers)


def matmul_params(config: PretrainedConfig) -> int:
    """Weights used in matmuls per token: every projection plus the LM head (tied or not);
    embedding lookups, norms and biases excluded (the FLOP convention of the planner)."""
    table = param_table(config)
    g = table.geo
    return g.n_layers * table.layer_matmul_params(g.hidden, g.n_kv, g.ffn) + config.vocab_size * g.hidden
