"""FLOPs per token from a model's modules: the planner's formula on uniform models, and what
torch's FlopCounterMode counts on per-layer pruned ones (a layer without heads included)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from capgap.models.arch import flop_shape, param_table
from capgap.models.pruned.plan import KeepPlan
from capgap.models.pruned.shrink import materialize
from capgap.plan import ModelShape
from capgap.plan.estimate import measured_flops
from tests.prune.conftest import tiny_config

# (arch, kept hidden, KV groups per layer, FFN neurons per layer): layer 1 keeps no heads
SHAPES = [("gpt2", 24, [3, 0, 1, 4], [96, 40, 7, 60]),
          ("gpt_neox", 20, [4, 0, 2, 1], [80, 33, 1, 50]),
          ("llama", 40, [2, 0, 1, 2], [72, 30, 5, 64]),
          ("qwen3", 36, [3, 0, 2, 1], [70, 10, 72, 3])]


def _eager(arch: str):  # noqa: ANN202 - a model
    """Eager attention: FlopCounterMode does not see the CPU SDPA kernel, only plain matmuls."""
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(tiny_config(arch), attn_implementation="eager").eval()


@pytest.mark.parametrize("arch", ["gpt2", "gpt_neox", "llama", "qwen3", "gemma2", "phi3"])
def test_a_uniform_model_counts_as_the_planner_does(arch):
    assert flop_shape(_eager(arch)) == ModelShape.of(tiny_config(arch)).flops


@pytest.mark.parametrize(("arch", "d", "groups", "ffn"), SHAPES, ids=[s[0] for s in SHAPES])
def test_per_layer_shapes_count_what_torch_counts(arch, d, groups, ffn):
    model = _eager(arch)
    table = param_table(model.config)
    geo = table.geo
    pruned = materialize(model, KeepPlan.from_counts(list(range(4)), d, groups, ffn), "global")
    shape = flop_shape(pruned)
    # the formula from the plan: each layer's projections at its own widths, plus the LM head
    assert shape.matmul_params == (sum(table.layer_matmul_params(d, g, f)
                                       for g, f in zip(groups, ffn, strict=True))
                                   + model.config.vocab_size * d)
    assert shape.attn_width == sum(groups) * geo.group_size * geo.head_dim
    batch, seq = 2, 24  # exact: both count integer matmul FLOPs, nothing else
    assert measured_flops(pruned, batch, seq, train=False) == batch * seq * shape.forward_flops(seq)
    assert measured_flops(pruned, batch, seq, train=True) == batch * seq * shape.train_flops(seq)
