"""Scores are mean |∂L/∂mask| of the LM loss, normalised per layer, saved and reloaded."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from capgap.errors import CapgapError
from capgap.models.arch import adapter_for
from capgap.prune import MaskSet, Scores, attach, baseline_scores, prune, score
from tests.prune.conftest import ARCHS, calib, tiny_model


def _loss(model, batch: torch.Tensor, masks: MaskSet) -> float:  # noqa: ANN001
    # Trap: transformers' loss casts logits to float32; finite differences need float64.
    with torch.no_grad(), attach(model, masks):
        logits = model(input_ids=batch).logits[:, :-1]
    return float(torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()))


@pytest.mark.parametrize("arch", ARCHS)
def test_scores_are_absolute_mask_gradients(arch: str) -> None:
    """Central finite differences of the loss in one ξ, ν, μ and λ entry match the score."""
    model = tiny_model(arch)
    batch = calib(1)[0]
    s = score(model, [batch])
    geo = adapter_for(model).geometry(model)
    eps = 2.0**-8  # exact in float32; LLaMA's RMSNorm computes in float32, so not tiny
    for name, index in [("heads", (1, 1)), ("neurons", (2, 5)), ("hidden", (3,)), ("layers", (2,))]:
        plus, minus = MaskSet.ones(geo), MaskSet.ones(geo)
        getattr(plus, name)[index] += eps
        getattr(minus, name)[index] -= eps
        grad = (_loss(model, batch, plus) - _loss(model, batch, minus)) / (2 * eps)
        raw = s.layers if name == "layers" else s.raw[name]
        assert_close(raw[index].double(), torch.tensor(abs(grad), dtype=torch.float64), rtol=1e-2, atol=1e-6)


def test_scores_are_normalised_per_layer_and_average_over_batches() -> None:
    model = tiny_model("llama")
    batches = calib(3)
    s = score(model, batches)
    assert_close(s.heads.norm(dim=1), torch.ones(4))
    assert_close(s.neurons.norm(dim=1), torch.ones(4))
    assert_close(s.hidden.norm(), torch.tensor(1.0))
    assert_close(s.heads, s.raw["heads"] / s.raw["heads"].norm(dim=1, keepdim=True))
    per_batch = [score(model, [b]).raw["neurons"] for b in batches]
    assert_close(s.raw["neurons"], sum(per_batch) / 3)
    assert s.meta["calibration_tokens"] == 3 * 4 * 16
    assert s.meta["calibration_batches"] == 3


def test_scoring_leaves_the_model_as_it_was() -> None:
    model = tiny_model("gpt2").train()
    model.transformer.h[0].mlp.c_fc.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    score(model, calib(1))
    assert model.training
    assert [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def test_token_budget_stops_the_pass() -> None:
    model = tiny_model("gpt_neox")
    s = score(model, calib(5), tokens=100)  # 64-token batches: two are needed
    assert s.meta["calibration_batches"] == 2
    assert s.meta["calibration_tokens"] == 128


def test_save_load_round_trip_gives_the_same_students(tmp_path) -> None:  # noqa: ANN001
    model = tiny_model("llama")
    s = score(model, calib(2))
    s.save(tmp_path / "scores")
    t = Scores.load(tmp_path / "scores")
    for name in ("heads", "neurons", "hidden", "layers"):
        assert torch.equal(getattr(s, name).float(), getattr(t, name))
    assert t.meta["calibration_tokens"] == s.meta["calibration_tokens"]
    for p in (0.3, 0.6):  # a ladder of students from one pass
        a, b = prune(model, s, sparsity=p), prune(model, t, sparsity=p)
        assert a.plan.to_dict() == b.plan.to_dict()


def test_scores_of_another_model_are_refused() -> None:
    s = score(tiny_model("llama"), calib(1))
    with pytest.raises(CapgapError, match="do not fit"):
        prune(tiny_model("llama", num_hidden_layers=2), s, sparsity=0.5)


def test_calibration_smaller_than_one_batch_is_refused() -> None:
    model = tiny_model("gpt2")
    with pytest.raises(CapgapError, match="one batch"):
        score(model, calib(2), tokens=10)
    with pytest.raises(CapgapError, match="less than one batch"):
        score(model, [])


def test_magnitude_baseline_is_the_weight_norm_of_each_unit() -> None:
    model = tiny_model("llama")  # GQA: 3 query heads per KV group, head_dim 8
    s = baseline_scores(model, "magnitude")
    attn = model.model.layers[1].self_attn
    q_rows, kv_rows = slice(3 * 8, 6 * 8), slice(8, 16)  # KV group 1
    expected = (
        attn.q_proj.weight[q_rows].pow(2).sum() + attn.k_proj.weight[kv_rows].pow(2).sum()
        + attn.v_proj.weight[kv_rows].pow(2).sum() + attn.o_proj.weight[:, q_rows].pow(2).sum()
    ).sqrt()
    assert_close(s.raw["heads"][1, 1], expected.float())
    mlp = model.model.layers[2].mlp
    neuron = (mlp.gate_proj.weight[5].pow(2).sum() + mlp.up_proj.weight[5].pow(2).sum()
              + mlp.down_proj.weight[:, 5].pow(2).sum()).sqrt()
    assert_close(s.raw["neurons"][2, 5], neuron.float())
    r1, r2 = baseline_scores(model, "random", seed=1), baseline_scores(model, "random", seed=1)
    assert torch.equal(r1.heads, r2.heads) and r1.heads.shape == s.heads.shape
    prune(model, s, sparsity=0.5)  # usable wherever gradient scores are


def test_magnitude_baseline_gathers_a_gpt2_heads_q_k_and_v_columns() -> None:
    """GPT-2 packs all queries, then all keys, then all values in one [d, 3d] projection: a
    head's units are three separate column blocks, not one contiguous run."""
    model = tiny_model("gpt2")  # d 32, 4 heads of 8
    s = baseline_scores(model, "magnitude")
    attn = model.transformer.h[1].attn
    cols = torch.cat([torch.arange(8, 16) + block * 32 for block in range(3)])  # head 1
    expected = (attn.c_attn.weight[:, cols].pow(2).sum() + attn.c_attn.bias[cols].pow(2).sum()
                + attn.c_proj.weight[8:16].pow(2).sum()).sqrt()
    assert_close(s.raw["heads"][1, 1], expected.float())


def test_a_model_with_per_layer_shapes_cannot_be_scored_again() -> None:
    model = tiny_model("gpt2")
    small = prune(model, score(model, calib(1)), sparsity=0.5, allocation="global").model
    with pytest.raises(CapgapError, match="per-layer shapes"):
        score(small, calib(1))
