"""The one definition of model size used everywhere in capgap.

* ``total``: every distinct parameter tensor, tied tensors counted once. This is how the
  paper and model names count size (Pythia-70M, GPT-2 124M).
* ``non_embedding``: ``total`` minus token and learned position embeddings. A *tied* LM head
  is the token embedding and so is excluded; an *untied* LM head is a separate matrix and is
  counted (once) in ``non_embedding``.

Every stage records both; "size" without a qualifier means ``total``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ParamCount:
    """Parameter counts of one model."""

    total: int
    non_embedding: int

    @property
    def embedding(self) -> int:
        return self.total - self.non_embedding

    def to_dict(self) -> dict[str, int]:
        return asdict(self) | {"embedding": self.embedding}


def count_params(model: nn.Module) -> ParamCount:
    """Count ``model``'s parameters under capgap's one definition (see module docstring)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():  # parameters() already skips tied duplicates
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    embed_ids: set[int] = set()
    embed = 0
    for module in model.modules():
        if isinstance(module, nn.Embedding) and id(module.weight) not in embed_ids:
            embed_ids.add(id(module.weight))
            embed += module.weight.numel()
    return ParamCount(total=total, non_embedding=total - embed)


def count_params_from_config(config) -> ParamCount:  # noqa: ANN001 - any PretrainedConfig
    """Count parameters of the model ``config`` describes without allocating weights."""
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return count_params(model)
