"""Slice weights into a genuinely smaller model, or zero-pad it back to a vanilla shape.

Materialising (:func:`materialize`) copies the model *structure* (weights are never copied
in full), then replaces every parameter by the rows/columns a :class:`KeepPlan` keeps, drops
layers, and fixes the few attributes transformers derives at construction (adapter). The
result is the model class you started from, with standard transformers modules, only
smaller. Saving and loading it is :mod:`capgap.models.pruned.format`.

:func:`export_vanilla` turns any pruned model into an exact vanilla checkpoint by
zero-padding every layer to the largest kept count (same logits, larger shapes):
padded heads have zero q/k/v rows and zero output-projection columns (softmax over a
zero query is uniform, times zero weights is zero); padded neurons have zero input rows and
zero output columns. When the vanilla config also needs a wider hidden size (GPT-2/NeoX
tie it to heads × head_dim; LLaMA needs hidden % heads == 0), the hidden dims are padded so
the norms still see the kept statistics:
  * RMSNorm: padded dims stay zero; the mean of squares over ``D'`` dims is ``d/D'`` of the
    kept one, so norm weights are scaled by √(d/D') and the epsilon by d/D' (exact).
  * LayerNorm: every residual write puts the *mean of its kept outputs* into the padded
    dims (padded rows = mean of kept rows, linear, so it holds for the whole residual
    stream). The mean over ``D'`` dims is then the kept mean, the variance is ``d/D'`` of
    the kept one: weights × √(d/D'), epsilon × d/D', padded weight and bias zero (exact).
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from transformers import AutoModelForCausalLM, PretrainedConfig

from capgap.errors import CapgapError
from capgap.models.arch import Adapter, Geometry, adapter_for, require_unpruned
from capgap.models.arch.layout import HEAD_KINDS, ceil_div, ffn_index, head_index, kind_size
from capgap.models.pruned.plan import KeepPlan


class EmptyAttention(nn.Module):
    """Attention of a layer that kept no heads: it adds nothing to the residual stream.

    It still writes one all-zero head per token into a KV cache, so the cache's length stays
    right (models read positions from it; a 0-head entry would count as empty).
    """

    def __init__(self, layer_idx: int, head_dim: int) -> None:
        super().__init__()
        self.layer_idx = layer_idx
        self.head_dim = head_dim

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> tuple[torch.Tensor, None]:
        cache = next((kwargs[k] for k in ("cache", "layer_past", "past_key_values")
                      if kwargs.get(k) is not None), None)  # an empty cache is falsy
        if cache is not None and hasattr(cache, "update"):
            b, t = hidden_states.shape[:2]
            zero = hidden_states.new_zeros(b, 1, t, self.head_dim)  # (B, heads=1, T, hd)
            cache.update(zero, zero, self.layer_idx)
        return torch.zeros_like(hidden_states), None


class EmptyMLP(nn.Module):
    """FFN of a layer that kept no neurons: adds nothing (no bias either)."""

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return torch.zeros_like(hidden_states)


def _indices(kinds: tuple, plan: KeepPlan, pos: int | None, geo: Geometry) -> dict[str, torch.Tensor]:
    idx = {"h": plan.hidden}
    if pos is not None:
        for k in ("ffn", "ffn2"):
            idx[k] = ffn_index(k, plan.neurons[pos], geo.ffn)
        for k in HEAD_KINDS:
            if k in kinds:
                idx[k] = head_index(k, plan.heads[pos], geo, geo.n_kv)
    return idx


def _take(t: torch.Tensor, kinds: tuple, idx: dict[str, torch.Tensor]) -> torch.Tensor:
    """Select the kept entries of every pruned axis of ``t``."""
    for axis, kind in enumerate(kinds):
        if kind is not None:
            t = t.index_select(axis, idx["h" if kind.startswith("h_") else kind].to(t.device))
    return t


def _set_param(root: nn.Module, name: str, value: torch.Tensor, requires_grad: bool) -> None:
    path, _, leaf = name.rpartition(".")
    setattr(root.get_submodule(path), leaf, nn.Parameter(value, requires_grad=requires_grad))


def _fix_shape_attrs(model: nn.Module) -> None:
    """Shape attributes some modules read in forward (Conv1D.nf, LayerNorm.normalized_shape)."""
    for m in model.modules():
        w = getattr(m, "weight", None)
        if not isinstance(w, torch.Tensor):
            continue
        if isinstance(m, nn.Linear):
            m.out_features, m.in_features = w.shape
        elif hasattr(m, "nf") and hasattr(m, "nx"):  # transformers Conv1D: weight [in, out]
            m.nx, m.nf = w.shape
        elif isinstance(m, nn.LayerNorm):
            m.normalized_shape = (w.shape[0],)
        elif isinstance(m, nn.Embedding):
            m.embedding_dim = w.shape[1]


def is_tied(model: nn.Module, adapter: Adapter) -> bool:
    lm = model.get_submodule(adapter.lm_head)
    return lm.weight is model.get_submodule(adapter.embeddings[0]).weight


def _tie(model: nn.Module, adapter: Adapter) -> None:
    model.get_submodule(adapter.lm_head).weight = model.get_submodule(adapter.embeddings[0]).weight


def _structure_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` whose parameters are empty placeholders (weights not copied)."""
    memo = {id(p): nn.Parameter(torch.empty(0, device=p.device), requires_grad=p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def materialize(model: nn.Module, plan: KeepPlan, allocation: str, inplace: bool = False) -> nn.Module:
    """A physically smaller copy of ``model`` keeping what ``plan`` keeps.

    ``allocation`` decides the config written: ``uniform`` plans get a validated vanilla
    config; ``global`` ones the per-layer maximum (see module docstring).
    """
    adapter = adapter_for(model)
    require_unpruned(model)
    geo = adapter.geometry(model)
    tied = is_tied(model, adapter)
    base_config = model.config.to_dict()
    src = dict(model.named_parameters())
    new = model if inplace else _structure_copy(model)
    with torch.no_grad():
        for name, kinds in adapter.top_params.items():
            if name in src and not (tied and name == f"{adapter.lm_head}.weight"):
                _set_param(new, name, _take(src[name], kinds, _indices(kinds, plan, None, geo)), src[name].requires_grad)
        _shrink_layers(new, src, plan, adapter, geo)
    if tied:
        _tie(new, adapter)
    if adapter.embed_scaled:
        _rescale_embeddings(new, adapter, geo.hidden, plan.d, tied)
    _fix_shape_attrs(new)
    _update_config(new.config, adapter, geo, plan, allocation)
    new.capgap_pruning = {"allocation": allocation, "base_config": base_config, "plan": plan.to_dict()}
    return new


def _shrink_layers(new: nn.Module, src: dict, plan: KeepPlan, adapter: Adapter, geo: Geometry) -> None:
    old_layers = adapter.layer_list(new)
    kept = nn.ModuleList([old_layers[i] for i in plan.layers])
    parent, _, leaf = adapter.layers.rpartition(".")
    setattr(new.get_submodule(parent), leaf, kept)
    for pos, (old_idx, layer) in enumerate(zip(plan.layers, kept, strict=True)):
        g, f = plan.groups[pos], plan.ffn[pos]
        for rel, kinds in adapter.layer_params.items():
            full = f"{adapter.layers}.{old_idx}.{rel}"
            if full not in src or (rel.startswith(adapter.attn + ".") and g == 0):
                continue
            if rel.startswith(adapter.mlp + ".") and f == 0:
                continue
            value = _take(src[full], kinds, _indices(kinds, plan, pos, geo))
            _set_param(layer, rel, value, src[full].requires_grad)
        if g == 0:
            setattr(layer, adapter.attn, EmptyAttention(pos, geo.head_dim))
        else:
            adapter.fix_attention(layer.get_submodule(adapter.attn), g * geo.group_size, geo, old_idx, pos)
        if f == 0:
            setattr(layer, adapter.mlp, EmptyMLP())


def _update_config(config: PretrainedConfig, adapter: Adapter, geo: Geometry, plan: KeepPlan, allocation: str) -> None:
    """Write the pruned shape into ``config`` in place (submodules hold references to it)."""
    g = max(max(plan.groups, default=1), 1)
    f = max(max(plan.ffn, default=1), 1)
    n = len(plan.layers)
    if allocation == "uniform":
        adapter.vanilla_config(config, plan.d, g, f, plan.layers)  # validates; CapgapError if not
    updates = adapter.config_updates(geo, plan.d, g, f, n)
    if getattr(config, "layer_types", None) is not None:
        updates["layer_types"] = [config.layer_types[i] for i in plan.layers]
    for key, value in updates.items():
        setattr(config, key, value)


# ---------------------------------------------------------------------------------------
# Building models without allocating (or randomly initialising) full-size weights.


def _init_rotary(model: nn.Module, config: PretrainedConfig) -> None:
    """Recompute rotary buffers (lost by ``to_empty``) from ``config``, as transformers does."""
    for m in model.modules():  # one inv_freq (most families) or one per layer type (Gemma 3)
        if type(m).__name__.endswith("RotaryEmbedding"):
            saved = m.config
            m.config = config
            try:
                model._init_weights(m)
            finally:
                m.config = saved


def fill_weights(model: nn.Module, state: dict[str, torch.Tensor], adapter: Adapter, tied: bool, config: PretrainedConfig) -> None:
    """Replace meta weights by ``state`` (strict), restore ties and rotary buffers."""
    model.to_empty(device="cpu")
    missing, unexpected = model.load_state_dict(state, strict=False, assign=True)
    allowed = {f"{adapter.lm_head}.weight"} if tied else set()
    if unexpected or set(missing) - allowed:
        raise CapgapError(f"saved weights do not match the pruned shape (missing {missing[:3]}, unexpected {unexpected[:3]})")
    if tied:
        _tie(model, adapter)
    _init_rotary(model, config)
    for m in model.modules():  # non-persistent scale buffers (Gemma) are lost by to_empty
        if hasattr(m, "scalar_embed_scale"):
            with torch.no_grad():
                m.embed_scale.fill_(m.scalar_embed_scale)
    model.eval()


# ---------------------------------------------------------------------------------------
# Exact vanilla export by zero-padding.


def padded_shape(adapter: Adapter, geo: Geometry, plan: KeepPlan) -> tuple[int, int, int]:
    """(hidden, KV groups, FFN) of the smallest vanilla config holding every layer."""
    d = plan.d
    g = max(max(plan.groups, default=0), 1)
    f = max(max(plan.ffn, default=0), 1)
    if adapter.hidden_tied_to_heads:
        g = max(g, ceil_div(d, geo.head_dim))
        return g * geo.head_dim, g, f
    r = geo.group_size
    for g2 in range(g, max(g, geo.n_kv) + 1):  # more zero heads rather than wider hidden
        if d % (g2 * r) == 0:
            return d, g2, f
    return ceil_div(d, g * r) * g * r, g, f


def _pad_hidden(t: torch.Tensor, axis: int, kind: str, d: int, d_pad: int, adapter: Adapter) -> torch.Tensor:
    if d_pad == d:
        return t
    shape = list(t.shape)
    shape[axis] = d_pad - d
    if kind == "h_out" and adapter.norm_kind == "layernorm":  # mean of the kept outputs (docstring)
        fill = t.mean(dim=axis, keepdim=True).expand(shape)
    else:
        fill = t.new_zeros(shape)
    if kind == "h_norm_w":  # the norm scales by (offset + w): rescale that product
        off = adapter.norm_offset
        t = (off + t) * math.sqrt(d / d_pad) - off
    return torch.cat([t, fill], dim=axis)


def _pad(t: torch.Tensor, kinds: tuple, geo: Geometry, src_gf: tuple[int, int], dst: tuple[int, int, int], d: int, adapter: Adapter) -> torch.Tensor:
    """Zero-pad one pruned tensor to the padded vanilla shape ``dst`` = (hidden, groups, ffn)."""
    g, f = src_gf
    d_pad, g_pad, f_pad = dst
    for axis, kind in enumerate(kinds):
        if kind is None:
            continue
        if kind.startswith("h_"):
            t = _pad_hidden(t, axis, kind, d, d_pad, adapter)
            continue
        shape = list(t.shape)
        shape[axis] = kind_size(kind, geo, d_pad, g_pad, f_pad, 0)
        if kind.startswith("ffn"):
            pos = ffn_index(kind, torch.arange(f), f_pad)
        else:
            pos = head_index(kind, torch.arange(g), geo, g_pad)
        t = t.new_zeros(shape).index_copy(axis, pos.to(t.device), t)
    return t


def export_vanilla(model: nn.Module, plan: KeepPlan, base_config: PretrainedConfig) -> nn.Module:
    """An exact vanilla model (same logits) holding a pruned ``model`` zero-padded per layer."""
    adapter = adapter_for(base_config)
    geo = adapter.geometry(base_config)
    d_pad, g_pad, f_pad = padded_shape(adapter, geo, plan)
    why = _export_error(adapter, plan, d_pad, g_pad)
    if why:
        raise CapgapError(why)
    config = adapter.vanilla_config(base_config, d_pad, g_pad, f_pad, plan.layers, eps_scale=plan.d / d_pad)
    config._attn_implementation = model.config._attn_implementation
    src = dict(model.named_parameters())
    tied = is_tied(model, adapter)
    with torch.device("meta"):
        out = AutoModelForCausalLM.from_config(config)
    state = {}
    for name, p in out.named_parameters():
        kinds, gf = _kinds_of(name, adapter, plan)
        if name in src:
            state[name] = _pad(src[name].detach(), kinds, geo, gf, (d_pad, g_pad, f_pad), plan.d, adapter)
        else:  # a sub-block the pruned layer does not have: contributes nothing
            state[name] = torch.zeros(p.shape, dtype=next(iter(src.values())).dtype)
    fill_weights(out, state, adapter, tied, config)
    if adapter.embed_scaled:
        _rescale_embeddings(out, adapter, plan.d, d_pad, tied)
    return out


def _export_error(adapter: Adapter, plan: KeepPlan, d_pad: int, g_pad: int) -> str | None:
    """Why zero-padding this plan would not be exact for ``adapter`` (None if it is)."""
    if adapter.head_norms and any(g != g_pad for g in plan.groups):
        return (f"{adapter.name} normalises q/k over all heads of a layer, so zero-padded heads would "
                "change that statistic; this per-layer model stays in capgap format (load_pruned)")
    if adapter.attn_norms_share_eps and d_pad != plan.d:
        return (f"{adapter.name}'s q/k norms share the config epsilon that padding the hidden width "
                f"rescales ({plan.d} -> {d_pad}); this model stays in capgap format (load_pruned)")
    return None


def _rescale_embeddings(model: nn.Module, adapter: Adapter, d_from: int, d_to: int, tied: bool) -> None:
    """Keep a sqrt(hidden)-scaled embedding's output when the hidden width goes ``d_from`` ->
    ``d_to`` (Gemma): weights x sqrt(d_from / d_to), and with a tied head the final norm
    (``offset + w``) divided by the same factor so the logits do not move (exact)."""
    if d_from == d_to:
        return
    c = math.sqrt(d_from / d_to)
    emb = model.get_submodule(adapter.embeddings[0])
    final = model.get_submodule(adapter.final_norm)
    with torch.no_grad():
        emb.weight.mul_(c)
        if tied:
            off = adapter.norm_offset
            final.weight.copy_((off + final.weight) / c - off)
        emb.scalar_embed_scale = d_to**0.5
        emb.embed_scale.fill_(d_to**0.5)


def _kinds_of(name: str, adapter: Adapter, plan: KeepPlan) -> tuple[tuple, tuple[int, int]]:
    if name in adapter.top_params:
        return adapter.top_params[name], (0, 0)
    idx, rel = name[len(adapter.layers) + 1 :].split(".", 1)
    pos = int(idx)
    return adapter.layer_params[rel], (plan.groups[pos], plan.ffn[pos])
