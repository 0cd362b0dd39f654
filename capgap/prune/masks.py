"""Mask variables on an unmodified transformers model, attached with hooks.

Four masks, all ones by default (then the model computes exactly what it did before):

* ξ ``heads``   (L, G)  one per attention head, or per key/value group under GQA (a KV head
  and the query heads sharing it stand or fall together). transformers 5 has no
  ``head_mask`` argument, so ξ scales the *input* of the attention output projection,
  viewed as (..., heads, head_dim).
* ν ``neurons`` (L, F)  scales the input of the FFN down projection.
* μ ``hidden``  (D,)    one vector shared by all layers. It multiplies every write into the
  residual stream (embedding outputs, attention and FFN output projections, or in
  post-norm families the norms after them) and the output of every norm over hidden dims.
* λ ``layers``  (L,)    scales both residual writes of a layer: λ_l = 0 turns the layer into
  the identity. Its gradient is the first-order estimate of the loss change from dropping
  the layer, which is how layers are scored for depth pruning.

Hard-mask semantics (the reference a materialised model must reproduce):

* Norms compute their statistics over the dims where μ ≠ 0 only and output exactly zero
  elsewhere (a LayerNorm bias must not leak into pruned dims), as the paper's code does.
  With μ all non-zero this is the ordinary norm. A norm over a head axis (OLMo 2's q/k
  norm over heads x head_dim) likewise covers only the heads whose ξ ≠ 0.
* A layer whose ξ are all exactly zero contributes nothing from attention: the output
  projection's bias is dropped as well (the materialised model has no such module). The
  same holds for ν and the FFN.

The zero pattern of μ, ξ and ν is read when the hooks are attached (:func:`attach`); change
mask *values* freely, but re-attach after changing which entries are zero.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from capgap.models.arch import Adapter, Geometry, adapter_for, require_unpruned
from capgap.models.arch.layout import head_index, norm_eps
from capgap.models.pruned import KeepPlan


@dataclass
class MaskSet:
    """ξ (L, G), ν (L, F), μ (D,), λ (L,) as float32 tensors."""

    heads: torch.Tensor
    neurons: torch.Tensor
    hidden: torch.Tensor
    layers: torch.Tensor

    @classmethod
    def ones(cls, geo: Geometry, requires_grad: bool = False, device: torch.device | str = "cpu") -> MaskSet:
        def one(*shape: int) -> torch.Tensor:
            return torch.ones(*shape, device=device, requires_grad=requires_grad)

        return cls(
            one(geo.n_layers, geo.n_kv), one(geo.n_layers, geo.ffn), one(geo.hidden), one(geo.n_layers)
        )

    @classmethod
    def from_plan(cls, plan: KeepPlan, geo: Geometry) -> MaskSet:
        """Hard 0/1 masks equivalent to ``plan`` (dropped layers: λ = 0)."""
        m = cls.ones(geo)
        m.heads.zero_()
        m.neurons.zero_()
        m.hidden.zero_()[plan.hidden] = 1
        m.layers.zero_()
        for i, heads, neurons in zip(plan.layers, plan.heads, plan.neurons, strict=True):
            m.layers[i] = 1
            m.heads[i, heads] = 1
            m.neurons[i, neurons] = 1
        for i in set(range(geo.n_layers)) - set(plan.layers):
            m.heads[i] = 1  # irrelevant under λ = 0; keeps the layer's blocks "alive"
            m.neurons[i] = 1
        return m

    def tensors(self) -> dict[str, torch.Tensor]:
        return {"heads": self.heads, "neurons": self.neurons, "hidden": self.hidden, "layers": self.layers}


class MaskHandle:
    """Hooks attaching a :class:`MaskSet` to a model; ``remove()`` (or ``with``) detaches them."""

    def __init__(self, model: nn.Module, masks: MaskSet, adapter: Adapter | None = None) -> None:
        require_unpruned(model)
        self.model = model
        self.masks = masks
        self.adapter = adapter or adapter_for(model)
        self.geo = self.adapter.geometry(model)
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self._read_zero_pattern()
        self._attach()

    def _read_zero_pattern(self) -> None:
        m = self.masks
        nz = (m.hidden != 0).nonzero().flatten()
        # None: all dims kept -> ordinary norms (fast path used while scoring)
        self.hidden_idx = None if nz.numel() == m.hidden.numel() else nz
        self.attn_alive = (m.heads != 0).any(dim=1).tolist()
        self.mlp_alive = (m.neurons != 0).any(dim=1).tolist()
        # Per layer, for norms over a head axis: kept rows of each kind (None: all heads kept).
        self.head_idx: list[dict[str, torch.Tensor] | None] = []
        for row in m.heads:
            kept = (row != 0).nonzero().flatten()
            full = kept.numel() == row.numel() or kept.numel() == 0
            self.head_idx.append(None if full else {
                k: head_index(k, kept.cpu(), self.geo, self.geo.n_kv) for k in ("q", "kv")})

    def _hook(self, module: nn.Module, fn, pre: bool = False) -> None:  # noqa: ANN001
        if pre:
            self._handles.append(module.register_forward_pre_hook(fn))
        else:
            self._handles.append(module.register_forward_hook(fn))

    def _attach(self) -> None:
        a = self.adapter
        attn_write, mlp_write = a.residual_writes
        for name in a.embeddings:
            self._hook(self.model.get_submodule(name), self._write_hook(None, True))
        for i, layer in enumerate(a.layer_list(self.model)):
            # Norm hooks first: a post-norm family's residual write *is* a norm, whose
            # output the write hook then scales (hooks run in registration order).
            for norm in a.norms:
                self._hook(layer.get_submodule(norm), self._norm_hook)
            for name, kind in a.head_norms.items():
                if self.head_idx[i] is not None:
                    self._hook(layer.get_submodule(name), self._head_norm_hook(self.head_idx[i][kind]))
            self._hook(layer.get_submodule(a.attn_out), self._heads_pre_hook(i), pre=True)
            self._hook(layer.get_submodule(attn_write), self._write_hook(i, self.attn_alive[i]))
            self._hook(layer.get_submodule(a.mlp_out), self._neurons_pre_hook(i), pre=True)
            self._hook(layer.get_submodule(mlp_write), self._write_hook(i, self.mlp_alive[i]))
        self._hook(self.model.get_submodule(a.final_norm), self._norm_hook)

    def _heads_pre_hook(self, i: int):  # noqa: ANN202
        r, hd = self.geo.group_size, self.geo.head_dim

        def hook(module: nn.Module, args: tuple):  # noqa: ANN202
            x = args[0]  # (B, T, heads * head_dim)
            xi = self.masks.heads[i].to(x.device, x.dtype).repeat_interleave(r)  # (heads,)
            x = (x.unflatten(-1, (-1, hd)) * xi[:, None]).flatten(-2)
            return (x, *args[1:])

        return hook

    def _neurons_pre_hook(self, i: int):  # noqa: ANN202
        def hook(module: nn.Module, args: tuple):  # noqa: ANN202
            x = args[0]  # (B, T, ffn)
            return (x * self.masks.neurons[i].to(x.device, x.dtype), *args[1:])

        return hook

    def _write_hook(self, i: int | None, alive: bool):  # noqa: ANN202
        """Residual write: output * μ (* λ_i), or zero when the sub-block kept nothing."""

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            scale = self.masks.hidden.to(out.device, out.dtype)
            if i is not None:
                scale = scale * self.masks.layers[i].to(out.device, out.dtype)
            if not alive:
                scale = scale * 0.0  # trap: keeps the bias of an emptied block from leaking
            return out * scale

        return hook

    def _norm_hook(self, module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
        mu = self.masks.hidden.to(out.device, out.dtype)
        if self.hidden_idx is None:
            return out * mu
        a = self.adapter
        return masked_norm(module, args[0], self.hidden_idx, a.norm_kind, a.norm_offset) * mu

    def _head_norm_hook(self, idx: torch.Tensor):  # noqa: ANN202
        """A norm over heads x head_dim whose statistic covers the kept heads only."""

        def hook(module: nn.Module, args: tuple, out: torch.Tensor) -> torch.Tensor:
            return masked_norm(module, args[0], idx, self.adapter.norm_kind, self.adapter.norm_offset)

        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> MaskHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


def masked_norm(module: nn.Module, x: torch.Tensor, idx: torch.Tensor, kind: str,
                offset: float = 0.0) -> torch.Tensor:
    """The norm over the kept dims ``idx`` only; exactly zero in the other dims.

    ``offset``: an RMSNorm that scales by ``offset + weight`` (Gemma: 1)."""
    idx = idx.to(x.device)
    x_kept = x.index_select(-1, idx)  # (B, T, d)
    bias = getattr(module, "bias", None)
    if kind == "layernorm":
        y = F.layer_norm(
            x_kept, (idx.numel(),), module.weight[idx], None if bias is None else bias[idx], norm_eps(module)
        )
    elif offset:  # Gemma: fp32 statistics *and* fp32 scale, then cast
        xf = x_kept.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm_eps(module))
        y = (xf * (offset + module.weight[idx].float())).to(x.dtype)
    else:  # RMSNorm, computed as LlamaRMSNorm does (fp32 statistics)
        xf = x_kept.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + norm_eps(module))
        y = module.weight[idx] * xf.to(x.dtype)
    out = x.new_zeros(*x.shape[:-1], x.shape[-1])
    return out.index_copy(-1, idx, y.to(out.dtype))


def attach(model: nn.Module, masks: MaskSet, adapter: Adapter | None = None) -> MaskHandle:
    """Attach ``masks`` to ``model`` with hooks (no model source is copied or edited)."""
    return MaskHandle(model, masks, adapter)
