"""Materialised model == masked reference, for every architecture, allocation and depth rule."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from capgap.models.arch import adapter_for
from capgap.models.params import count_params
from capgap.prune import KeepPlan, MaskSet, attach, materialize, prune, score
from capgap.prune.masks import masked_norm
from tests.prune.conftest import ARCHS, calib, tiny_model

TIGHT = {"rtol": 1e-9, "atol": 1e-9}
# Gemma's RMSNorm computes in float32 whatever the model dtype, so a float64 model agrees
# only to float32 rounding there (~1e-7); every other family is checked to 1e-9.
FP32_NORMS = {"rtol": 1e-5, "atol": 1e-6}


def tol(model) -> dict:  # noqa: ANN001
    return FP32_NORMS if adapter_for(model).norm_offset else TIGHT


def masked_logits(model, plan: KeepPlan, tokens: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    geo = adapter_for(model).geometry(model)
    with torch.no_grad(), attach(model, MaskSet.from_plan(plan, geo)):
        return model(tokens).logits


def assert_all_sparsities_positive(model, plan: KeepPlan) -> None:  # noqa: ANN001
    geo = adapter_for(model).geometry(model)
    n = len(plan.layers)
    assert plan.d < geo.hidden, "hidden sparsity is zero"
    assert sum(plan.groups) < geo.n_kv * n, "head sparsity is zero"
    assert sum(plan.ffn) < geo.ffn * n, "neuron sparsity is zero"


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["base", "alt"])
def test_all_ones_masks_reproduce_the_model(arch: str, variant: str, tokens: torch.Tensor) -> None:
    model = tiny_model(arch, variant)
    geo = adapter_for(model).geometry(model)
    plan = KeepPlan.from_counts(list(range(geo.n_layers)), geo.hidden, [geo.n_kv] * geo.n_layers, [geo.ffn] * geo.n_layers)
    with torch.no_grad():
        ref = model(tokens).logits
    assert_close(masked_logits(model, plan, tokens), ref, rtol=0, atol=0)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["base", "alt"])
@pytest.mark.parametrize("allocation", ["global", "uniform"])
@pytest.mark.parametrize("drop", [None, "symmetric", "score"])
def test_materialised_equals_masked(arch: str, variant: str, allocation: str, drop: str | None, tokens: torch.Tensor) -> None:
    model = tiny_model(arch, variant)
    scores = score(model, calib())
    kw = {} if drop is None else {"drop_layers": 1, "drop_rule": drop}
    result = prune(model, scores, sparsity=0.5 if drop is None else 0.7, allocation=allocation, **kw)
    plan = result.plan
    assert_all_sparsities_positive(model, plan)
    assert len(plan.layers) == (4 if drop is None else 3 if drop == "score" else 2)
    with torch.no_grad():
        out = result.model(tokens).logits
    assert_close(out, masked_logits(model, plan, tokens), **tol(model))
    after = count_params(result.model)
    assert result.report["params_after"] == after.total
    assert result.report["params_after_non_embedding"] == after.non_embedding
    assert result.report["params_before"] == count_params(model).total


@pytest.mark.parametrize("arch", ARCHS)
def test_zero_sparsity_reproduces_the_original(arch: str, tokens: torch.Tensor) -> None:
    model = tiny_model(arch)
    for allocation in ("global", "uniform"):
        result = prune(model, score(model, calib(1)), sparsity=0.0, allocation=allocation)
        assert result.report["params_after"] == result.report["params_before"]
        with torch.no_grad():
            assert_close(result.model(tokens).logits, model(tokens).logits, rtol=0, atol=0)


def _plan_with_empty_blocks(model) -> KeepPlan:  # noqa: ANN001
    """Layer 0 keeps no heads, layer 1 no neurons, layer 2 some of both, layer 3 nothing."""
    geo = adapter_for(model).geometry(model)
    g = torch.Generator().manual_seed(3)
    pick = lambda n, k: torch.randperm(n, generator=g)[:k].sort().values  # noqa: E731
    return KeepPlan(
        layers=[0, 1, 2, 3],
        hidden=pick(geo.hidden, geo.hidden - 5),
        heads=[pick(geo.n_kv, 0), pick(geo.n_kv, 1), pick(geo.n_kv, geo.n_kv - 1), pick(geo.n_kv, 0)],
        neurons=[pick(geo.ffn, 7), pick(geo.ffn, 0), pick(geo.ffn, geo.ffn - 9), pick(geo.ffn, 0)],
    )


@pytest.mark.parametrize("arch", ARCHS)
def test_layers_left_without_heads_or_neurons_still_run(arch: str, tokens: torch.Tensor) -> None:
    model = tiny_model(arch, "alt")  # biases everywhere: an emptied block must not add its bias
    plan = _plan_with_empty_blocks(model)
    small = materialize(model, plan, "global")
    with torch.no_grad():
        out = small(tokens).logits
    assert_close(out, masked_logits(model, plan, tokens), **tol(model))
    assert count_params(small).total < count_params(model).total


@pytest.mark.parametrize("arch", ARCHS)
def test_cached_generation_matches_full_forward(arch: str) -> None:
    """KV cache with dropped (renumbered) layers and an attention-less layer."""
    model = tiny_model(arch)
    plan = _plan_with_empty_blocks(model)
    plan = KeepPlan([0, 2], plan.hidden, [plan.heads[0], plan.heads[2]], [plan.neurons[0], plan.neurons[2]])
    small = materialize(model, plan, "global")
    prompt = torch.tensor([[3, 5, 7, 11]])
    with torch.no_grad():
        gen = small.generate(prompt, max_new_tokens=6, do_sample=False, use_cache=True, pad_token_id=0)
        full = small(gen).logits
    # greedy: every generated token is the argmax of the uncached forward at its position
    assert torch.equal(full[0, 3:-1].argmax(-1), gen[0, 4:])


@pytest.mark.parametrize("arch", ARCHS)
def test_step_by_step_decoding_knows_its_position_when_layer_0_has_no_heads(arch: str) -> None:
    """Without explicit positions the model takes them from the cache's length, which the
    first layer's cache entry reports: an attention-less first layer must still count."""
    model = tiny_model(arch)
    plan = _plan_with_empty_blocks(model)
    plan = KeepPlan([0, 2], plan.hidden, [plan.heads[0], plan.heads[2]], [plan.neurons[0], plan.neurons[2]])
    small = materialize(model, plan, "global")
    seq = torch.tensor([[3, 5, 7, 11, 13]])
    with torch.no_grad():
        full = small(seq).logits
        past = small(seq[:, :4], use_cache=True).past_key_values
        assert past.get_seq_length() == 4
        step = small(seq[:, 4:], cache=past, use_cache=True).logits
    assert_close(step[0, -1], full[0, -1], **tol(model))


@pytest.mark.parametrize("kind", ["layernorm", "rmsnorm"])
def test_masked_norm_uses_kept_statistics_and_zeroes_the_rest(kind: str) -> None:
    torch.manual_seed(0)
    d = 10
    norm = torch.nn.LayerNorm(d).double() if kind == "layernorm" else tiny_model("llama").model.norm
    d = norm.weight.shape[0]
    with torch.no_grad():
        norm.weight.add_(torch.randn(d, dtype=norm.weight.dtype))
        if getattr(norm, "bias", None) is not None:
            norm.bias.add_(1.0)  # a bias that would leak into pruned dims
    x = torch.randn(2, 3, d, dtype=torch.float64)
    idx = torch.tensor([0, 2, 3, d - 1])
    y = masked_norm(norm, x, idx, kind)
    pruned = torch.ones(d, dtype=torch.bool)
    pruned[idx] = False
    assert torch.all(y[..., pruned] == 0)
    small = type(norm)(4, eps=norm.eps) if kind == "layernorm" else type(norm)(4, eps=norm.variance_epsilon)
    small = small.double()
    with torch.no_grad():  # the materialised norm: kept weights, kept dims only
        small.weight.copy_(norm.weight[idx])
        if kind == "layernorm":
            small.bias.copy_(norm.bias[idx])
        assert_close(y[..., idx], small(x[..., idx]), **TIGHT)


@pytest.mark.parametrize("model_type", ["qwen2", "mistral"])  # mistral: no tiny_config of its own
def test_llama_like_layouts(model_type: str, tokens: torch.Tensor) -> None:
    """Qwen2 (q/k/v biases, layer_types) and Mistral share LLaMA's adapter."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(model_type, hidden_size=48, num_hidden_layers=4, num_attention_heads=6,
                               num_key_value_heads=2, intermediate_size=72, vocab_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg).double().eval()
    result = prune(model, score(model, calib(1)), sparsity=0.6, drop_layers=1, drop_rule="score")
    assert_all_sparsities_positive(model, result.plan)
    with torch.no_grad():
        assert_close(result.model(tokens).logits, masked_logits(model, result.plan, tokens), **TIGHT)
    if model_type == "qwen2":
        assert result.model.config.layer_types == ["full_attention"] * 3
