"""Allocation: sizes land on target, global ranks across layers, uniform stays vanilla."""

from __future__ import annotations

import math

import pytest
import torch

from capgap.errors import CapgapError
from capgap.models.arch import adapter_for
from capgap.models.params import count_params
from capgap.prune import Scores, prune, score
from capgap.prune.allocate import paper_component_sparsity
from tests.prune.conftest import ARCHS, calib, tiny_model


def synthetic_scores(model, seed: int = 0, layer_bias: list[float] | None = None) -> Scores:  # noqa: ANN001
    """Random scores; ``layer_bias`` scales a layer's head/neuron scores before normalising."""
    geo = adapter_for(model).geometry(model)
    g = torch.Generator().manual_seed(seed)
    raw = {
        "heads": torch.rand(geo.n_layers, geo.n_kv, generator=g),
        "neurons": torch.rand(geo.n_layers, geo.ffn, generator=g),
        "hidden": torch.rand(geo.hidden, generator=g),
        "layers": torch.rand(geo.n_layers, generator=g),
    }
    if layer_bias is not None:
        b = torch.tensor(layer_bias)[:, None]
        raw["heads"], raw["neurons"] = raw["heads"] ** b, raw["neurons"] ** b
    return Scores.from_raw(raw, {})


def test_paper_split() -> None:
    assert paper_component_sparsity(0.0) == 0.0
    assert math.isclose(paper_component_sparsity(0.6), 1 - math.sqrt(0.4))
    # hidden and heads/neurons multiply: (1 - p')^2 = 1 - p
    assert math.isclose((1 - paper_component_sparsity(0.75)) ** 2, 0.25)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("allocation", ["global", "uniform"])
@pytest.mark.parametrize("p", [0.3, 0.6])
def test_achieved_sparsity_is_close_to_target(arch: str, allocation: str, p: float) -> None:
    model = tiny_model(arch)
    r = prune(model, synthetic_scores(model), sparsity=p, allocation=allocation)
    assert abs(r.report["achieved_sparsity"] - p) < 0.005
    assert r.report["target_sparsity"] == p
    assert r.report["params_after"] == count_params(r.model).total
    # the paper's equal split alone would miss: embeddings shrink only with the hidden width
    assert r.report["component_sparsity"]["hidden_and_heads"] != pytest.approx(paper_component_sparsity(p), abs=1e-3)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("allocation", ["global", "uniform"])
def test_target_params_lands_within_one_percent(arch: str, allocation: str) -> None:
    model = tiny_model(arch)
    target = int(0.45 * count_params(model).total)
    r = prune(model, synthetic_scores(model), target_params=target, allocation=allocation)
    got = count_params(r.model).total
    assert abs(got - target) <= 0.01 * target
    assert r.report["params_after"] == got


@pytest.mark.parametrize("arch", ARCHS)
def test_uniform_keeps_equal_counts_in_a_vanilla_shape(arch: str) -> None:
    model = tiny_model(arch)
    adapter = adapter_for(model)
    geo = adapter.geometry(model)
    for p in (0.2, 0.5, 0.7):
        plan = prune(model, synthetic_scores(model), sparsity=p, allocation="uniform").plan
        assert len(set(plan.groups)) == 1 and len(set(plan.ffn)) == 1
        assert adapter.vanilla_shape_error(geo, plan.d, plan.groups[0]) is None


def test_global_ranks_heads_and_neurons_across_layers() -> None:
    model = tiny_model("llama")
    s = synthetic_scores(model, layer_bias=[0.2, 1.0, 1.0, 5.0])  # layer 0 strong, layer 3 weak
    plan = prune(model, s, sparsity=0.5, allocation="global").plan
    assert plan.groups[0] > plan.groups[3] and plan.ffn[0] > plan.ffn[3]
    for name, kept in (("heads", plan.heads), ("neurons", plan.neurons)):
        table = getattr(s, name)
        mask = torch.zeros_like(table, dtype=torch.bool)
        for i, idx in enumerate(kept):
            mask[i, idx] = True
        assert table[mask].min() >= table[~mask].max()  # the kept ones are the global top-k
    assert torch.equal(plan.hidden, torch.argsort(s.hidden, descending=True)[: plan.d].sort().values)


def test_rounding_multiple() -> None:
    model = tiny_model("llama")  # hidden 48, ffn 72
    for allocation in ("global", "uniform"):
        plan = prune(model, synthetic_scores(model), sparsity=0.5, allocation=allocation, multiple=8).plan
        assert plan.d % 8 == 0
        assert all(f % 8 == 0 or f == 72 for f in plan.ffn)


def test_layer_drop_rules() -> None:
    model = tiny_model("gpt2")
    s = synthetic_scores(model)
    s.layers = torch.tensor([3.0, 0.1, 2.0, 1.0])
    assert prune(model, s, sparsity=0.6, drop_layers=1, drop_rule="symmetric").plan.layers == [1, 2]
    assert prune(model, s, sparsity=0.6, drop_layers=2, drop_rule="score").plan.layers == [0, 2]
    assert prune(model, s, sparsity=0.6, drop_layers=[0, 3]).plan.layers == [1, 2]
    r = prune(model, s, sparsity=0.6, drop_layers=1, drop_rule="score")
    assert r.report["layers_kept"] == [0, 2, 3]
    assert abs(r.report["achieved_sparsity"] - 0.6) < 0.005  # width solved after dropping


def test_layer_scores_rank_a_useless_layer_last() -> None:
    """A layer whose output projections are zero changes nothing: its λ-gradient is zero."""
    model = tiny_model("llama")
    with torch.no_grad():
        model.model.layers[2].self_attn.o_proj.weight.zero_()
        model.model.layers[2].mlp.down_proj.weight.zero_()
    s = score(model, calib(2))
    assert s.layers[2] == 0 and (s.layers[[0, 1, 3]] > 0).all()
    assert prune(model, s, sparsity=0.4, drop_layers=1, drop_rule="score").plan.layers == [0, 1, 3]


def test_unreachable_target_names_the_binding_constraint() -> None:
    model = tiny_model("gpt2")  # hidden 32 = 4 heads x 8; ffn 96
    target = int(0.75 * count_params(model).total)
    with pytest.raises(CapgapError, match=r"within 1% .* bound by --multiple 32"):
        prune(model, synthetic_scores(model), target_params=target, allocation="uniform", multiple=32)
    r = prune(model, synthetic_scores(model), sparsity=0.25, allocation="uniform", multiple=32)
    assert r.report["binding_constraint"] == "--multiple 32"
