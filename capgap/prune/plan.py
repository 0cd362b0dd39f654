"""What a pruned model keeps (:class:`Plan`) and how many parameters that is (:class:`ParamTable`).

The parameter count is computed analytically from kept counts using the adapter's axis
tables, so allocation can search over thousands of candidate shapes without materialising
any. Tests check it equals :func:`capgap.models.params.count_params` of the materialised
model (the project's one size definition: tied tensors once, embeddings = token and learned
position embeddings).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from capgap.errors import CapgapError
from capgap.models.params import ParamCount
from capgap.prune.adapters import Adapter, Geometry, Kinds, kind_size, require_unpruned
from capgap.prune.masks import MaskSet


@dataclass
class Plan:
    """Kept units of a pruned model, as indices into the unpruned model (all ascending)."""

    layers: list[int]  # kept layer indices
    hidden: torch.Tensor  # (d,) kept hidden dims
    heads: list[torch.Tensor]  # per kept layer: kept KV groups (heads without GQA)
    neurons: list[torch.Tensor]  # per kept layer: kept FFN neurons

    @property
    def d(self) -> int:
        return int(self.hidden.numel())

    @property
    def groups(self) -> list[int]:
        return [int(h.numel()) for h in self.heads]

    @property
    def ffn(self) -> list[int]:
        return [int(n.numel()) for n in self.neurons]

    def is_uniform(self) -> bool:
        return len(set(self.groups)) <= 1 and len(set(self.ffn)) <= 1

    def masks(self, geo: Geometry) -> MaskSet:
        """Hard 0/1 masks equivalent to this plan (dropped layers: λ = 0)."""
        m = MaskSet.ones(geo)
        m.heads.zero_()
        m.neurons.zero_()
        m.hidden.zero_()[self.hidden] = 1
        m.layers.zero_()
        for i, heads, neurons in zip(self.layers, self.heads, self.neurons, strict=True):
            m.layers[i] = 1
            m.heads[i, heads] = 1
            m.neurons[i, neurons] = 1
        for i in set(range(geo.n_layers)) - set(self.layers):
            m.heads[i] = 1  # irrelevant under λ = 0; keeps the layer's blocks "alive"
            m.neurons[i] = 1
        return m

    def to_dict(self) -> dict:
        return {
            "layers": list(self.layers),
            "hidden": self.hidden.tolist(),
            "heads": [h.tolist() for h in self.heads],
            "neurons": [n.tolist() for n in self.neurons],
        }

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        def t(x: list[int]) -> torch.Tensor:
            return torch.tensor(x, dtype=torch.long)

        return cls(
            list(data["layers"]), t(data["hidden"]), [t(h) for h in data["heads"]], [t(n) for n in data["neurons"]]
        )

    @classmethod
    def from_counts(cls, layers: list[int], d: int, groups: list[int], ffn: list[int]) -> Plan:
        """A plan keeping the *first* units: the shape of a plan, used to rebuild saved models."""
        a = functools.partial(torch.arange, dtype=torch.long)
        return cls(list(layers), a(d), [a(g) for g in groups], [a(f) for f in ffn])


@dataclass
class ParamTable:
    """Every parameter of a model as (axis kinds, unpruned shape), grouped by where it lives."""

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

    def _size(self, entries: list, d: int, g: int, f: int) -> int:
        return sum(
            math.prod(kind_size(k, self.geo, d, g, f, n) for k, n in zip(kinds, shape, strict=True))
            for kinds, shape, *_ in entries
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

    def count_plan(self, plan: Plan) -> ParamCount:
        return self.count(plan.d, plan.groups, plan.ffn)

    def __hash__(self) -> int:
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other
