"""Scratch initialisation: the same shapes, fresh weights. One definition for the sweep's
scratch students and ``capgap distill --init scratch``, so both mean the same thing."""

from __future__ import annotations

from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def reinitialise(model: M, seed: int) -> M:
    """Fresh weights, same shapes, in place: normal(0, ``config.initializer_range``) for
    every 2-D weight, zero biases, unit norms; seeded so a scratch student is reproducible.

    Every 2-D weight is redrawn, whatever its module class: GPT-2's attention and MLP are
    ``Conv1D``, not ``nn.Linear``, and must not keep the teacher's pruned weights. Buffers
    are left alone: a global-pruned model's rotary frequencies must stay the ones it was
    saved with (its config holds per-layer maxima, so recomputing them from it, as a model's
    own ``_init_weights`` does, would change the positions it is trained on).
    """
    std = float(getattr(getattr(model, "config", None), "initializer_range", 0.02))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            weight = getattr(module, "weight", None)
            if isinstance(weight, nn.Parameter) and weight.ndim == 2:
                weight.copy_(torch.randn(weight.shape, generator=gen) * std)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.LayerNorm) or "RMSNorm" in type(module).__name__:
                if getattr(module, "weight", None) is not None:
                    module.weight.fill_(1.0)
                if getattr(module, "bias", None) is not None:
                    module.bias.zero_()
    return model
