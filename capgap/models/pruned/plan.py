"""What a pruned model keeps (:class:`KeepPlan`), as indices into the unpruned model.

Its size is counted by the registry's :class:`~capgap.models.arch.ParamTable` (analytic,
from the adapter's axis tables), so allocation searches shapes without building any.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch


@dataclass
class KeepPlan:
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

    def to_dict(self) -> dict:
        return {
            "layers": list(self.layers),
            "hidden": self.hidden.tolist(),
            "heads": [h.tolist() for h in self.heads],
            "neurons": [n.tolist() for n in self.neurons],
        }

    @classmethod
    def from_dict(cls, data: dict) -> KeepPlan:
        def t(x: list[int]) -> torch.Tensor:
            return torch.tensor(x, dtype=torch.long)

        return cls(
            list(data["layers"]), t(data["hidden"]), [t(h) for h in data["heads"]], [t(n) for n in data["neurons"]]
        )

    @classmethod
    def from_counts(cls, layers: list[int], d: int, groups: list[int], ffn: list[int]) -> KeepPlan:
        """A plan keeping the *first* units: the shape of a plan, used to rebuild saved models."""
        a = functools.partial(torch.arange, dtype=torch.long)
        return cls(list(layers), a(d), [a(g) for g in groups], [a(f) for f in ffn])
