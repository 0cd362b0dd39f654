"""Where heads, FFN neurons and hidden dimensions live in each supported architecture.

Architecture is *data* here: one :class:`Adapter` per family lists module paths and, for
every parameter, what each tensor axis is indexed by (an *axis kind*). Masking, scoring,
allocation, parameter counting, slicing and zero-padding are written once against these
tables; nothing else in ``capgap.prune`` knows a module name.

Axis kinds
    ``h_in``     hidden dims a module *reads* (q/k/v/FFN-up input, untied LM head input)
    ``h_out``    hidden dims a module *writes* into the residual stream (attention output
                 projection, FFN down projection, their biases, embedding columns)
    ``h_norm_w`` / ``h_norm_b``  norm weight / bias over the hidden dims
    ``q`` / ``kv``  query / key-value head dims, ``head_dim`` rows per head; query heads are
                 grouped by the KV head they share (GQA), so one mask ξ per KV group
    ``qkv_cat``  GPT-2's fused ``c_attn`` output: ``[q | k | v]``, each ``heads * head_dim``
    ``qkv_int``  GPT-NeoX's fused ``query_key_value`` output, interleaved per head:
                 ``[heads, 3, head_dim]`` (q, k, v of head 0, then of head 1, ...)
    ``ffn``      FFN intermediate neurons
    ``None``     untouched (vocabulary, positions)

Traps, written where they bite:
* GPT-2 uses ``Conv1D`` whose weight is ``[in, out]`` (transposed w.r.t. ``nn.Linear``), so
  its tables list the input axis first.
* GPT-2 splits ``c_attn``'s output with ``split_size`` fixed at construction; after slicing
  heads it must be reset (:meth:`Adapter.fix_attention`).
* GPT-2 with ``scale_attn_by_inverse_layer_idx`` divides scores by ``layer_idx + 1``; when
  layers are dropped the renumbered layers would change scale, so the ratio is folded into
  the query weights (exact) and ``scaling`` recomputed as a fresh model would.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import PretrainedConfig

from capgap.errors import CapgapError

SUPPORTED = "gpt2, gpt_neox, llama (and llama-like mistral, qwen2)"

Kinds = tuple[str | None, ...]


@dataclass(frozen=True)
class Geometry:
    """The prunable shape of a model (unpruned)."""

    n_layers: int
    hidden: int
    n_heads: int  # query heads
    n_kv: int  # key/value heads = mask groups ξ per layer
    head_dim: int
    ffn: int

    @property
    def group_size(self) -> int:
        """Query heads per KV head (1 without GQA)."""
        return self.n_heads // self.n_kv


@dataclass(frozen=True)
class Adapter:
    """One architecture family's layout as data (see module docstring)."""

    name: str
    layers: str  # dotted path of the decoder-layer ModuleList
    attn: str  # attention sub-module in a layer (replaced when it keeps no heads)
    mlp: str  # FFN sub-module in a layer (replaced when it keeps no neurons)
    attn_out: str  # module whose input is the concatenated heads; its output a residual write
    mlp_out: str  # module whose input is the FFN neurons; its output a residual write
    norms: tuple[str, ...]  # norms inside a layer
    final_norm: str
    embeddings: tuple[str, ...]  # modules whose output is written into the residual stream
    lm_head: str
    norm_kind: str  # "layernorm" | "rmsnorm"
    eps_key: str  # config key of the norm epsilon
    layer_params: dict[str, Kinds]
    top_params: dict[str, Kinds]
    geometry_of: Callable[[PretrainedConfig], Geometry]
    config_updates: Callable[[Geometry, int, int, int, int], dict]  # (geo, d, g, f, L) -> keys
    shape_rule: str  # the vanilla-config constraint, in words
    hidden_tied_to_heads: bool  # vanilla config derives head_dim = hidden / heads
    model_types: tuple[str, ...] = field(default=())

    def layer_list(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.layers)

    def geometry(self, model_or_config: nn.Module | PretrainedConfig) -> Geometry:
        config = getattr(model_or_config, "config", model_or_config)
        return self.geometry_of(config)

    def hidden_ok(self, geo: Geometry, d: torch.Tensor, g: int) -> torch.Tensor:
        """Which hidden widths ``d`` a vanilla config can hold with ``g`` KV groups (vectorised)."""
        heads = g * geo.group_size
        if self.hidden_tied_to_heads:
            return d == heads * geo.head_dim
        return d % heads == 0

    def vanilla_shape_error(self, geo: Geometry, d: int, g: int) -> str | None:
        """Why a vanilla config cannot hold hidden ``d`` with ``g`` KV groups (None if it can)."""
        heads = g * geo.group_size
        if g < 1:
            return "a vanilla config needs at least one attention head per layer"
        if bool(self.hidden_ok(geo, torch.tensor(d), g)):
            return None
        if self.hidden_tied_to_heads:
            return f"{self.name} derives head_dim = hidden / heads, so hidden must equal heads x {geo.head_dim}"
        return f"{self.name} config requires hidden % heads == 0 (hidden {d}, heads {heads})"

    def vanilla_config(
        self, config: PretrainedConfig, d: int, g: int, f: int, n_layers: int, eps_scale: float = 1.0
    ) -> PretrainedConfig:
        """A validated vanilla config of the same family with the given uniform shape."""
        geo = self.geometry(config)
        why = self.vanilla_shape_error(geo, d, g)
        if why:
            raise CapgapError(why)
        updates = self.config_updates(geo, d, g, f, n_layers)
        updates[self.eps_key] = getattr(config, self.eps_key) * eps_scale
        data = config.to_dict() | updates
        if getattr(config, "layer_types", None) is not None:
            data["layer_types"] = list(config.layer_types)[:n_layers]
        return type(config).from_dict(data)

    def fix_attention(self, attn: nn.Module, n_heads: int, geo: Geometry, old_idx: int, new_idx: int) -> None:
        """Reset attributes a smaller/renumbered attention module derives at construction."""
        if hasattr(attn, "layer_idx"):
            attn.layer_idx = new_idx
        if self.name == "gpt2":
            attn.split_size = n_heads * geo.head_dim  # trap: fixed at construction
            attn.num_heads = n_heads
            attn.embed_dim = n_heads * geo.head_dim
            if attn.scale_attn_by_inverse_layer_idx and old_idx != new_idx:
                _fold_inverse_layer_scale(attn, n_heads * geo.head_dim, old_idx, new_idx)


def _fold_inverse_layer_scale(attn: nn.Module, q_width: int, old_idx: int, new_idx: int) -> None:
    """GPT-2 scales scores by 1/(layer_idx+1); keep the old scale after renumbering (exact)."""
    ratio = (new_idx + 1) / (old_idx + 1)
    with torch.no_grad():
        attn.c_attn.weight[:, :q_width] *= ratio  # Conv1D weight is [in, out]; q first
        attn.c_attn.bias[:q_width] *= ratio
    attn.scaling = attn.scaling * (old_idx + 1) / (new_idx + 1)


def _gpt2_geometry(c: PretrainedConfig) -> Geometry:
    inner = c.n_inner if c.n_inner is not None else 4 * c.n_embd
    return Geometry(c.n_layer, c.n_embd, c.n_head, c.n_head, c.n_embd // c.n_head, inner)


def _neox_geometry(c: PretrainedConfig) -> Geometry:
    hd = c.hidden_size // c.num_attention_heads
    h = c.num_attention_heads
    return Geometry(c.num_hidden_layers, c.hidden_size, h, h, hd, c.intermediate_size)


def _llama_geometry(c: PretrainedConfig) -> Geometry:
    h = c.num_attention_heads
    kv = getattr(c, "num_key_value_heads", None) or h
    hd = getattr(c, "head_dim", None) or c.hidden_size // h
    return Geometry(c.num_hidden_layers, c.hidden_size, h, kv, hd, c.intermediate_size)


def _gpt2_updates(geo: Geometry, d: int, g: int, f: int, n: int) -> dict:
    return {"n_embd": d, "n_head": g, "n_inner": f, "n_layer": n}


def _neox_updates(geo: Geometry, d: int, g: int, f: int, n: int) -> dict:
    return {"hidden_size": d, "num_attention_heads": g, "intermediate_size": f, "num_hidden_layers": n}


def _llama_updates(geo: Geometry, d: int, g: int, f: int, n: int) -> dict:
    return {
        "hidden_size": d,
        "num_attention_heads": g * geo.group_size,
        "num_key_value_heads": g,
        "head_dim": geo.head_dim,  # explicit: hidden / heads no longer equals it
        "intermediate_size": f,
        "num_hidden_layers": n,
    }


GPT2 = Adapter(
    name="gpt2",
    layers="transformer.h",
    attn="attn",
    mlp="mlp",
    attn_out="attn.c_proj",
    mlp_out="mlp.c_proj",
    norms=("ln_1", "ln_2"),
    final_norm="transformer.ln_f",
    embeddings=("transformer.wte", "transformer.wpe"),
    lm_head="lm_head",
    norm_kind="layernorm",
    eps_key="layer_norm_epsilon",
    layer_params={
        # Conv1D: weight is [in, out]
        "attn.c_attn.weight": ("h_in", "qkv_cat"),
        "attn.c_attn.bias": ("qkv_cat",),
        "attn.c_proj.weight": ("q", "h_out"),
        "attn.c_proj.bias": ("h_out",),
        "mlp.c_fc.weight": ("h_in", "ffn"),
        "mlp.c_fc.bias": ("ffn",),
        "mlp.c_proj.weight": ("ffn", "h_out"),
        "mlp.c_proj.bias": ("h_out",),
        "ln_1.weight": ("h_norm_w",),
        "ln_1.bias": ("h_norm_b",),
        "ln_2.weight": ("h_norm_w",),
        "ln_2.bias": ("h_norm_b",),
    },
    top_params={
        "transformer.wte.weight": (None, "h_out"),
        "transformer.wpe.weight": (None, "h_out"),
        "transformer.ln_f.weight": ("h_norm_w",),
        "transformer.ln_f.bias": ("h_norm_b",),
        "lm_head.weight": (None, "h_in"),
    },
    geometry_of=_gpt2_geometry,
    config_updates=_gpt2_updates,
    shape_rule="hidden = heads x head_dim (GPT-2 derives head_dim = hidden / heads)",
    hidden_tied_to_heads=True,
    model_types=("gpt2",),
)

GPT_NEOX = Adapter(
    name="gpt_neox",
    layers="gpt_neox.layers",
    attn="attention",
    mlp="mlp",
    attn_out="attention.dense",
    mlp_out="mlp.dense_4h_to_h",
    norms=("input_layernorm", "post_attention_layernorm"),
    final_norm="gpt_neox.final_layer_norm",
    embeddings=("gpt_neox.embed_in",),
    lm_head="lm_head",
    norm_kind="layernorm",
    eps_key="layer_norm_eps",
    layer_params={
        "attention.query_key_value.weight": ("qkv_int", "h_in"),
        "attention.query_key_value.bias": ("qkv_int",),
        "attention.dense.weight": ("h_out", "q"),
        "attention.dense.bias": ("h_out",),
        "mlp.dense_h_to_4h.weight": ("ffn", "h_in"),
        "mlp.dense_h_to_4h.bias": ("ffn",),
        "mlp.dense_4h_to_h.weight": ("h_out", "ffn"),
        "mlp.dense_4h_to_h.bias": ("h_out",),
        "input_layernorm.weight": ("h_norm_w",),
        "input_layernorm.bias": ("h_norm_b",),
        "post_attention_layernorm.weight": ("h_norm_w",),
        "post_attention_layernorm.bias": ("h_norm_b",),
    },
    top_params={
        "gpt_neox.embed_in.weight": (None, "h_out"),
        "gpt_neox.final_layer_norm.weight": ("h_norm_w",),
        "gpt_neox.final_layer_norm.bias": ("h_norm_b",),
        "lm_head.weight": (None, "h_in"),
    },
    geometry_of=_neox_geometry,
    config_updates=_neox_updates,
    shape_rule="hidden = heads x head_dim (GPT-NeoX derives head_size = hidden / heads)",
    hidden_tied_to_heads=True,
    model_types=("gpt_neox",),
)

LLAMA = Adapter(
    name="llama",
    layers="model.layers",
    attn="self_attn",
    mlp="mlp",
    attn_out="self_attn.o_proj",
    mlp_out="mlp.down_proj",
    norms=("input_layernorm", "post_attention_layernorm"),
    final_norm="model.norm",
    embeddings=("model.embed_tokens",),
    lm_head="lm_head",
    norm_kind="rmsnorm",
    eps_key="rms_norm_eps",
    layer_params={
        "self_attn.q_proj.weight": ("q", "h_in"),
        "self_attn.q_proj.bias": ("q",),
        "self_attn.k_proj.weight": ("kv", "h_in"),
        "self_attn.k_proj.bias": ("kv",),
        "self_attn.v_proj.weight": ("kv", "h_in"),
        "self_attn.v_proj.bias": ("kv",),
        "self_attn.o_proj.weight": ("h_out", "q"),
        "self_attn.o_proj.bias": ("h_out",),
        "mlp.gate_proj.weight": ("ffn", "h_in"),
        "mlp.gate_proj.bias": ("ffn",),
        "mlp.up_proj.weight": ("ffn", "h_in"),
        "mlp.up_proj.bias": ("ffn",),
        "mlp.down_proj.weight": ("h_out", "ffn"),
        "mlp.down_proj.bias": ("h_out",),
        "input_layernorm.weight": ("h_norm_w",),
        "post_attention_layernorm.weight": ("h_norm_w",),
    },
    top_params={
        "model.embed_tokens.weight": (None, "h_out"),
        "model.norm.weight": ("h_norm_w",),
        "lm_head.weight": (None, "h_in"),
    },
    geometry_of=_llama_geometry,
    config_updates=_llama_updates,
    shape_rule="hidden % heads == 0 (LlamaConfig validation; head_dim is explicit)",
    hidden_tied_to_heads=False,
    model_types=("llama", "mistral", "qwen2"),
)

ADAPTERS: dict[str, Adapter] = {t: a for a in (GPT2, GPT_NEOX, LLAMA) for t in a.model_types}


def adapter_for(model_or_config: nn.Module | PretrainedConfig) -> Adapter:
    """The adapter of a model or config; CapgapError naming the supported ones otherwise."""
    config = getattr(model_or_config, "config", model_or_config)
    model_type = getattr(config, "model_type", None) or type(model_or_config).__name__
    adapter = ADAPTERS.get(model_type)
    if adapter is None:
        raise CapgapError(f"unsupported architecture '{model_type}' for pruning; supported: {SUPPORTED}")
    if "sliding_attention" in (getattr(config, "layer_types", None) or []):
        raise CapgapError(
            f"{model_type} config mixes sliding-window and full-attention layers; "
            "pruning supports only models whose layers are interchangeable"
        )
    return adapter


def require_unpruned(model: nn.Module) -> None:
    """CapgapError for a model with per-layer shapes: masks and scores need equal layers."""
    if getattr(model, "capgap_pruning", {}).get("allocation") == "global":
        raise CapgapError(
            "this model was pruned with per-layer shapes (global allocation); score and prune "
            "the original model, or export it with --export vanilla first"
        )


# ---------------------------------------------------------------------------------------
# Index building: one function per axis kind, shared by slicing, counting and padding.


def kind_size(kind: str | None, geo: Geometry, d: int, g: int, f: int, full: int) -> int:
    """Length of an axis of ``kind`` when ``d`` hidden dims, ``g`` KV groups, ``f`` neurons are kept."""
    if kind is None:
        return full
    if kind.startswith("h_"):
        return d
    if kind == "q":
        return g * geo.group_size * geo.head_dim
    if kind == "kv":
        return g * geo.head_dim
    if kind in ("qkv_cat", "qkv_int"):
        return 3 * g * geo.head_dim
    if kind == "ffn":
        return f
    raise ValueError(kind)


def head_index(kind: str, groups: torch.Tensor, geo: Geometry, n_groups: int) -> torch.Tensor:
    """Row indices of a head axis of ``kind`` for the KV ``groups`` kept out of ``n_groups``.

    ``n_groups`` is the number of groups the *indexed* tensor holds (the unpruned count when
    slicing, the padded count when scattering into a padded tensor).
    """
    hd, r = geo.head_dim, geo.group_size
    dims = torch.arange(hd)
    if kind == "kv":
        return (groups[:, None] * hd + dims).reshape(-1)
    heads = (groups[:, None] * r + torch.arange(r)).reshape(-1)  # query heads of the groups
    q = (heads[:, None] * hd + dims).reshape(-1)
    if kind == "q":
        return q
    if kind == "qkv_cat":  # [q | k | v], each n_groups * hd wide (GPT-2 has no GQA)
        width = n_groups * r * hd
        return torch.cat([q, q + width, q + 2 * width])
    if kind == "qkv_int":  # [heads, 3, hd]: each head's q, k, v are contiguous
        return (heads[:, None] * 3 * hd + torch.arange(3 * hd)).reshape(-1)
    raise ValueError(kind)


def norm_eps(module: nn.Module) -> float:
    """Epsilon of a LayerNorm or an RMSNorm-style module."""
    for name in ("eps", "variance_epsilon", "epsilon"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise AttributeError(f"{type(module).__name__} has no epsilon")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def lcm(a: int, b: int) -> int:
    return a * b // math.gcd(a, b)
