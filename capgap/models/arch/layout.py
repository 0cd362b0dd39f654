"""Where heads, FFN neurons and hidden dimensions live in an architecture, as data.

One :class:`Adapter` per family lists module paths and, for every parameter, what each
tensor axis is indexed by (an *axis kind*). Masking, scoring, allocation, parameter
counting, slicing and zero-padding are written once against these tables; no stage knows a
module name. The instances live in :mod:`capgap.models.arch.families`.

Axis kinds
    ``h_in``     hidden dims a module *reads* (q/k/v/FFN-up input, untied LM head input)
    ``h_out``    hidden dims a module *writes* into the residual stream (attention output
                 projection, FFN down projection, their biases, embedding columns)
    ``h_norm_w`` / ``h_norm_b``  norm weight / bias over the hidden dims
    ``q`` / ``kv``  query / key-value head dims, ``head_dim`` rows per head; query heads are
                 grouped by the KV head they share (GQA), so one mask ξ per KV group
    ``qkv_cat``  a fused ``[q | k | v]`` output, q ``heads * head_dim`` wide and k, v each
                 ``kv_heads * head_dim`` (GPT-2's ``c_attn``, Phi-3's ``qkv_proj``)
    ``qkv_int``  GPT-NeoX's fused ``query_key_value`` output, interleaved per head:
                 ``[heads, 3, head_dim]`` (q, k, v of head 0, then of head 1, ...)
    ``ffn``      FFN intermediate neurons
    ``ffn2``     a fused ``[gate | up]`` output, each ``ffn`` wide (Phi-3's ``gate_up_proj``)
    ``None``     untouched (vocabulary, positions, a per-head norm over ``head_dim``)
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
from torch import nn
from transformers import PretrainedConfig

from capgap.errors import CapgapError
from capgap.models.params import ParamCount

Kinds = tuple[str | None, ...]
HEAD_KINDS = ("q", "kv", "qkv_cat", "qkv_int")


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
    title: str  # what users call it, for the supported-architecture table
    layers: str  # dotted path of the decoder-layer ModuleList
    attn: str  # attention sub-module in a layer (replaced when it keeps no heads)
    mlp: str  # FFN sub-module in a layer (replaced when it keeps no neurons)
    attn_out: str  # module whose input is the concatenated heads
    mlp_out: str  # module whose input is the FFN neurons
    norms: tuple[str, ...]  # norms over the hidden dims inside a layer
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
    gated: bool  # gated (SwiGLU/GeGLU) FFN: three FFN matrices instead of two
    model_types: tuple[str, ...] = field(default=())
    # Post-norm layouts (Gemma, OLMo 2) add a *norm's* output to the residual stream; the
    # residual-write masks (μ, λ) then sit on that norm. None: the output projection.
    attn_write: str | None = None
    mlp_write: str | None = None
    # Norms over a head axis (OLMo 2's q/k norm over heads x head_dim): module -> axis kind.
    # With heads pruned, their statistic is taken over the kept heads only.
    head_norms: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    norm_offset: float = 0.0  # Gemma's RMSNorm multiplies by (1 + weight)
    embed_scaled: bool = False  # embeddings multiplied by sqrt(hidden) (Gemma)
    attn_norms_share_eps: bool = False  # q/k norms read the config epsilon the hidden norms do
    config_per_layer: tuple[str, ...] = ()  # config keys the attention reads in forward
    attn_implementation: str = "sdpa"  # Gemma 2's soft-capped scores need "eager"
    notes: str = ""  # variants refused or caveats, for the supported-architecture table

    @property
    def residual_writes(self) -> tuple[str, str]:
        """(attention, FFN) modules whose outputs are added to the residual stream."""
        return self.attn_write or self.attn_out, self.mlp_write or self.mlp_out

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
        self, config: PretrainedConfig, d: int, g: int, f: int, layers: list[int], eps_scale: float = 1.0
    ) -> PretrainedConfig:
        """A validated vanilla config of the same family with the given uniform shape.

        ``layers`` are the kept layer ids: a per-layer attention pattern (``layer_types``,
        e.g. Gemma's sliding/global layers) keeps each kept layer's own type.
        """
        geo = self.geometry(config)
        why = self.vanilla_shape_error(geo, d, g)
        if why:
            raise CapgapError(why)
        updates = self.config_updates(geo, d, g, f, len(layers))
        updates[self.eps_key] = getattr(config, self.eps_key) * eps_scale
        data = config.to_dict() | updates
        if getattr(config, "layer_types", None) is not None:
            data["layer_types"] = [config.layer_types[i] for i in layers]
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
        if self.config_per_layer:  # trap: Phi-3 splits its fused qkv by the *config's* head count
            own = copy.copy(attn.config)
            own.num_attention_heads = n_heads
            own.num_key_value_heads = n_heads // geo.group_size
            attn.config = own
        if hasattr(attn, "num_key_value_heads"):
            attn.num_key_value_heads = n_heads // geo.group_size


def _fold_inverse_layer_scale(attn: nn.Module, q_width: int, old_idx: int, new_idx: int) -> None:
    """GPT-2 scales scores by 1/(layer_idx+1); keep the old scale after renumbering (exact)."""
    ratio = (new_idx + 1) / (old_idx + 1)
    with torch.no_grad():
        attn.c_attn.weight[:, :q_width] *= ratio  # Conv1D weight is [in, out]; q first
        attn.c_attn.bias[:q_width] *= ratio
    attn.scaling = attn.scaling * (old_idx + 1) / (new_idx + 1)


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
    if kind == "qkv_cat":
        return (geo.group_size + 2) * g * geo.head_dim
    if kind == "qkv_int":
        return 3 * g * geo.head_dim
    if kind == "ffn":
        return f
    if kind == "ffn2":
        return 2 * f
    raise ValueError(kind)


def head_index(kind: str, groups: torch.Tensor, geo: Geometry, n_groups: int) -> torch.Tensor:
    """Row indices of a head axis of ``kind`` for the KV ``groups`` kept out of ``n_groups``.

    ``n_groups`` is the number of groups the *indexed* tensor holds (the unpruned count when
    slicing, the padded count when scattering into a padded tensor).
    """
    hd, r = geo.head_dim, geo.group_size
    dims = torch.arange(hd)
    kv = (groups[:, None] * hd + dims).reshape(-1)
    if kind == "kv":
        return kv
    heads = (groups[:, None] * r + torch.arange(r)).reshape(-1)  # query heads of the groups
    q = (heads[:, None] * hd + dims).reshape(-1)
    if kind == "q":
        return q
    if kind == "qkv_cat":  # [q | k | v]: q is n_groups * r * hd wide, k and v n_groups * hd
        q_width, kv_width = n_groups * r * hd, n_groups * hd
        return torch.cat([q, kv + q_width, kv + q_width + kv_width])
    if kind == "qkv_int":  # [heads, 3, hd]: each head's q, k, v are contiguous (no GQA)
        return (heads[:, None] * 3 * hd + torch.arange(3 * hd)).reshape(-1)
    raise ValueError(kind)


def ffn_index(kind: str, neurons: torch.Tensor, n_neurons: int) -> torch.Tensor:
    """Indices of the ``neurons`` on an ``ffn`` axis, or on both halves of an ``ffn2`` axis."""
    return neurons if kind == "ffn" else torch.cat([neurons, neurons + n_neurons])


def norm_eps(module: nn.Module) -> float:
    """Epsilon of a LayerNorm or an RMSNorm-style module."""
    for name in ("eps", "variance_epsilon", "epsilon"):
        if hasattr(module, name):
            return float(getattr(module, name))
    raise AttributeError(f"{type(module).__name__} has no epsilon")


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


# ---------------------------------------------------------------------------------------
# Parameter counting from the axis tables (every family, every shape, no weights).


@dataclass
class ParamTable:
    """Every parameter of a model as (axis kinds, unpruned shape), grouped by where it lives.

    Counting a shape is then arithmetic, so allocation and the shape planners search
    thousands of candidates without building any; tests check it against
    :func:`capgap.models.params.count_params` of real models of each family.
    """

    top: list[tuple[Kinds, tuple[int, ...], bool]]  # (kinds, shape, is_embedding)
    attn: list[tuple[Kinds, tuple[int, ...]]]
    mlp: list[tuple[Kinds, tuple[int, ...]]]
    other: list[tuple[Kinds, tuple[int, ...]]]  # per-layer norms
    geo: Geometry

    @classmethod
    def from_model(cls, model: nn.Module, adapter: Adapter) -> ParamTable:
        require_unpruned(model)
        embed_ids = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
        top, layer_rel = [], {}
        prefix = adapter.layers + "."
        for name, p in model.named_parameters():  # tied duplicates are skipped here
            if name.startswith(prefix):
                idx, rel = name[len(prefix) :].split(".", 1)
                layer_rel.setdefault(int(idx), {})[rel] = tuple(p.shape)
            elif name in adapter.top_params:
                top.append((adapter.top_params[name], tuple(p.shape), id(p) in embed_ids))
            else:
                raise CapgapError(f"cannot prune parameter '{name}': not part of the {adapter.name} layout")
        rels = layer_rel.get(0, {})
        if any(v != rels for v in layer_rel.values()):
            raise CapgapError("cannot prune: layers of this model have different parameter sets")
        attn, mlp, other = [], [], []
        for rel, shape in rels.items():
            if rel not in adapter.layer_params:
                raise CapgapError(f"cannot prune parameter '{rel}': not part of the {adapter.name} layout")
            kinds = adapter.layer_params[rel]
            bucket = attn if rel.startswith(adapter.attn + ".") else mlp if rel.startswith(adapter.mlp + ".") else other
            bucket.append((kinds, shape))
        return cls(top, attn, mlp, other, adapter.geometry(model))

    def _size(self, entries: list, d: int, g: int, f: int, matmul: bool = False) -> int:
        return sum(
            math.prod(kind_size(k, self.geo, d, g, f, n) for k, n in zip(kinds, shape, strict=True))
            for kinds, shape, *_ in entries
            if not matmul or len(shape) == 2
        )

    @functools.cache  # noqa: B019 - tables live as long as a prune call
    def attn_params(self, d: int, g: int) -> int:
        return self._size(self.attn, d, g, 0) if g > 0 else 0

    @functools.cache  # noqa: B019
    def mlp_params(self, d: int, f: int) -> int:
        return self._size(self.mlp, d, 0, f) if f > 0 else 0

    @functools.cache  # noqa: B019
    def fixed_params(self, d: int, n_layers: int) -> tuple[int, int]:
        """(params outside attention/FFN, of which embeddings)."""
        top = self._size(self.top, d, 0, 0)
        embed = self._size([e for e in self.top if e[2]], d, 0, 0)
        return top + n_layers * self._size(self.other, d, 0, 0), embed

    def count(self, d: int, groups: list[int], ffn: list[int]) -> ParamCount:
        """Parameters of the model keeping ``d`` hidden dims and per-layer ``groups``/``ffn``."""
        fixed, embed = self.fixed_params(d, len(groups))
        total = fixed + sum(self.attn_params(d, g) for g in groups) + sum(self.mlp_params(d, f) for f in ffn)
        return ParamCount(total=total, non_embedding=total - embed)

    def layer_matmul_params(self, d: int, g: int, f: int) -> int:
        """Weights of one layer used in matmuls (2-D tensors: projections, not norms or biases)."""
        return self._size(self.attn, d, g, f, matmul=True) + self._size(self.mlp, d, g, f, matmul=True)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other
