"""The named pruning methods against direct computations, parity of what they prune, and the
registry's refusals."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from capgap.errors import CapgapError
from capgap.models.arch import ParamTable, adapter_for
from capgap.models.params import count_params
from capgap.prune import Scores, prune, score
from capgap.prune.api import check
from capgap.prune.methods import METHODS, get_method, help_lines
from tests.prune.conftest import ARCHS, calib, tiny_model
from tests.prune.test_parity import masked_logits, tol

SOME = ("gpt2", "gpt_neox", "llama", "gemma2", "phi3", "olmo2")  # every attention/FFN layout kind


def _batches() -> list[dict[str, torch.Tensor]]:
    """Two batches, the second padded: padding must count for nothing."""
    first, second = calib(2, batch=2, seq=10, seed=3)
    mask = torch.ones_like(second)
    mask[1, 8:] = 0  # shorter than the sliding windows (4): no fully masked attention row
    return [{"input_ids": first}, {"input_ids": second, "attention_mask": mask}]


def _token_mean(per_batch: list[torch.Tensor], batches: list[dict]) -> torch.Tensor:
    """Mean over real tokens of per-token values (B, T, ...) of several batches."""
    total, n = 0.0, 0
    for x, b in zip(per_batch, batches, strict=True):
        w = b.get("attention_mask", torch.ones_like(b["input_ids"])).double()
        w = w.reshape(*w.shape, *[1] * (x.dim() - 2))
        total = total + torch.where(w > 0, x.double(), 0.0).sum(dim=(0, 1))  # padding may hold NaN
        n += int(w.sum())
    return total / n


@pytest.mark.parametrize("arch", SOME)
def test_block_influence_is_one_minus_mean_cosine_of_hidden_states(arch: str) -> None:
    model, batches = tiny_model(arch), _batches()
    s = score(model, batches, method="block_influence")
    n_layers = model.config.num_hidden_layers
    cos = []
    for b in batches:
        last_in: list[torch.Tensor] = []  # the last layer's output: the final norm's input
        final_norm = model.get_submodule(adapter_for(model).final_norm)  # (hidden_states[-1] is normed)
        h = final_norm.register_forward_pre_hook(lambda m, a, seen=last_in: seen.append(a[0]))
        with torch.no_grad():
            hs = model(**b, output_hidden_states=True).hidden_states
        h.remove()
        outs = [*hs[1:n_layers], last_in[0]]
        cos.append(torch.stack([F.cosine_similarity(hs[i], outs[i], dim=-1) for i in range(n_layers)], -1))
    expected = 1 - _token_mean(cos, batches)  # (L,)
    assert_close(s.layers.double(), expected, rtol=1e-5, atol=1e-6)
    assert s.meta["depth_only"] and s.meta["calibration_tokens"] == 20 + 18


def _hooked_means(model, batches, modules: dict[str, list[str]]) -> dict[str, list[torch.Tensor]]:  # noqa: ANN001
    """Token means of what named modules see: ``in`` (pre-hook input) or ``out`` (output)."""
    seen: dict[str, list] = {}
    handles = []
    for kind, names in modules.items():
        for name in names:
            mod = model.get_submodule(name)
            if kind == "in":
                handles.append(mod.register_forward_pre_hook(lambda m, a, n=name: seen.setdefault(n, []).append(a[0])))
            else:
                handles.append(mod.register_forward_hook(lambda m, a, o, n=name: seen.setdefault(n, []).append(o)))
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in handles:
        h.remove()
    return {n: v for n, v in seen.items()}


@pytest.mark.parametrize(("arch", "attn_out", "mlp_out", "norms", "final"), [
    ("llama", "self_attn.o_proj", "mlp.down_proj", ("input_layernorm", "post_attention_layernorm"), "model.norm"),
    ("gpt2", "attn.c_proj", "mlp.c_proj", ("ln_1", "ln_2"), "transformer.ln_f"),
    ("phi3", "self_attn.o_proj", "mlp.down_proj", ("input_layernorm", "post_attention_layernorm"), "model.norm"),
])
def test_activation_scores_are_token_means_of_hooked_activations(arch, attn_out, mlp_out, norms, final) -> None:  # noqa: ANN001
    model, batches = tiny_model(arch), _batches()
    s = score(model, batches, method="activation")
    prefix = "transformer.h" if arch == "gpt2" else "model.layers"
    cfg = model.config
    heads = getattr(cfg, "num_attention_heads", None) or cfg.n_head
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    n_layers = getattr(cfg, "num_hidden_layers", None) or cfg.n_layer
    layers = [f"{prefix}.{i}" for i in range(n_layers)]
    seen = _hooked_means(model, batches, {
        "in": [f"{p}.{attn_out}" for p in layers] + [f"{p}.{mlp_out}" for p in layers],
        "out": [f"{p}.{n}" for p in layers for n in norms] + [final]})
    hidden = sum(_token_mean([o.abs() for o in seen[n]], batches)
                 for n in [f"{p}.{m}" for p in layers for m in norms] + [final])
    assert_close(s.raw["hidden"].double(), hidden, rtol=1e-5, atol=1e-7)
    for i, p in enumerate(layers):
        per_head = [x.unflatten(-1, (heads, -1)).norm(dim=-1) for x in seen[f"{p}.{attn_out}"]]  # (B, T, heads)
        groups = _token_mean(per_head, batches).reshape(kv, heads // kv).sum(-1)  # query heads of each KV head
        assert_close(s.raw["heads"][i].double(), groups, rtol=1e-5, atol=1e-7)
        neurons = _token_mean([x.abs() for x in seen[f"{p}.{mlp_out}"]], batches)
        assert_close(s.raw["neurons"][i].double(), neurons, rtol=1e-5, atol=1e-7)
    bi = score(model, batches, method="block_influence").layers
    assert_close(s.layers, bi)  # depth ranking by Block Influence, from the same pass


def _lm_loss(model, b: dict) -> torch.Tensor:  # noqa: ANN001
    mask = b.get("attention_mask", torch.ones_like(b["input_ids"]))
    labels = b["input_ids"].masked_fill(mask == 0, -100)  # padding is not scored
    return model(**b, labels=labels).loss


def _taylor(model, batches, weights: dict[str, tuple]) -> torch.Tensor:  # noqa: ANN001
    """Σ |w · ∂L/∂w| over the given (param name -> index) slices; L = mean of batch losses."""
    params = dict(model.named_parameters())
    model.requires_grad_(True)
    loss = sum(_lm_loss(model, b) for b in batches) / len(batches)
    grads = dict(zip(weights, torch.autograd.grad(loss, [params[n] for n in weights]), strict=True))
    model.requires_grad_(False)
    return sum((params[n].detach() * grads[n])[idx].abs().sum() for n, idx in weights.items())


def test_taylor_scores_are_weight_times_gradient_summed_per_unit_llama() -> None:
    model, batches = tiny_model("llama"), _batches()  # 6 heads in 2 KV groups, head_dim 8
    s = score(model, batches, method="taylor")
    a, m = "model.layers.1.self_attn", "model.layers.2.mlp"
    q, kv, every = slice(24, 48), slice(8, 16), slice(None)  # KV group 1: query heads 3-5
    head = _taylor(model, batches, {f"{a}.q_proj.weight": (q,), f"{a}.k_proj.weight": (kv,),
                                    f"{a}.v_proj.weight": (kv,), f"{a}.o_proj.weight": (every, q)})
    assert_close(s.raw["heads"][1, 1].double(), head.double(), rtol=1e-4, atol=1e-10)
    neuron = _taylor(model, batches, {f"{m}.gate_proj.weight": (5,), f"{m}.up_proj.weight": (5,),
                                      f"{m}.down_proj.weight": (every, 5)})
    assert_close(s.raw["neurons"][2, 5].double(), neuron.double(), rtol=1e-4, atol=1e-10)
    hidden = {"model.embed_tokens.weight": (every, 3), "lm_head.weight": (every, 3), "model.norm.weight": (3,)}
    for i in range(4):
        p = f"model.layers.{i}"
        hidden |= {f"{p}.{n}.weight": (every, 3) for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
                                                          "mlp.gate_proj", "mlp.up_proj")}
        hidden |= {f"{p}.{n}.weight": (3,) for n in ("self_attn.o_proj", "mlp.down_proj", "input_layernorm",
                                                     "post_attention_layernorm")}
    assert_close(s.raw["hidden"][3].double(), _taylor(model, batches, hidden).double(), rtol=1e-4, atol=1e-10)


def test_taylor_gathers_a_gpt2_heads_fused_q_k_v_columns() -> None:
    model, batches = tiny_model("gpt2"), _batches()  # d 32, 4 heads of 8; Conv1D weights are [in, out]
    s = score(model, batches, method="taylor")
    a, every = "transformer.h.2.attn", slice(None)
    cols = torch.cat([torch.arange(8, 16) + block * 32 for block in range(3)])  # head 1's q, k, v
    head = _taylor(model, batches, {f"{a}.c_attn.weight": (every, cols), f"{a}.c_attn.bias": (cols,),
                                    f"{a}.c_proj.weight": (slice(8, 16),)})
    assert_close(s.raw["heads"][2, 1].double(), head.double(), rtol=1e-4, atol=1e-10)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("method", ["activation", "taylor"])
def test_materialised_equals_masked_for_width_methods(arch: str, method: str, tokens: torch.Tensor) -> None:
    model = tiny_model(arch)
    result = prune(model, score(model, calib(), method=method), sparsity=0.5, allocation="global")
    with torch.no_grad():
        assert_close(result.model(tokens).logits, masked_logits(model, result.plan, tokens), **tol(model))
    assert result.report["method"] == method
    assert result.report["params_after"] == count_params(result.model).total


@pytest.mark.parametrize("arch", ARCHS)
def test_block_influence_drops_its_lowest_layers_at_full_width(arch: str, tokens: torch.Tensor) -> None:
    model = tiny_model(arch)
    s = score(model, calib(), method="block_influence")
    table = ParamTable.from_model(model, adapter_for(model))
    geo = table.geo
    three = table.count(geo.hidden, [geo.n_kv] * 3, [geo.ffn] * 3).total
    result = prune(model, s, target_params=three + 10)  # fits 3 layers, not 4
    plan = result.plan
    assert plan.layers == sorted(torch.argsort(s.layers, descending=True)[:3].tolist())
    assert plan.d == geo.hidden and plan.groups == [geo.n_kv] * 3 and plan.ffn == [geo.ffn] * 3
    assert result.report["params_after"] == three == count_params(result.model).total
    assert result.report["layer_drop"] == {"rule": "block_influence", "arg": 1}
    with torch.no_grad():
        assert_close(result.model(tokens).logits, masked_logits(model, plan, tokens), **tol(model))


def test_depth_only_refusals_are_one_line() -> None:
    model = tiny_model("llama")
    s = score(model, calib(1), method="block_influence")
    with pytest.raises(CapgapError, match="chooses the layers to drop itself"):
        prune(model, s, sparsity=0.3, drop_layers=1)
    with pytest.raises(CapgapError, match="smallest depth-only student"):
        check(model, sparsity=0.95, depth_only=True)


def test_every_method_records_its_cost_and_survives_save_and_load(tmp_path) -> None:  # noqa: ANN001
    model = tiny_model("qwen3")
    for name, method in METHODS.items():
        s = score(model, calib(2) if method.needs_data else None, method=name)
        assert s.meta["method"] == name and s.meta["seconds"] >= 0
        assert s.meta["calibration_tokens"] == (2 * 4 * 16 if method.needs_data else 0)
        s.save(tmp_path / name)
        again = Scores.load(tmp_path / name)
        report = prune(model, again, sparsity=0.4, allocation="uniform").report
        assert report["method"] == name and report["scoring"]["calibration_tokens"] == s.meta["calibration_tokens"]
        assert report["scoring"]["seconds"] == s.meta["seconds"]


def test_unknown_method_and_missing_data_are_one_line_errors() -> None:
    with pytest.raises(CapgapError, match=r"unknown pruning method 'shortgpt'; choose from expressiveness, ") as e:
        score(tiny_model("gpt2"), calib(1), method="shortgpt")
    assert "\n" not in str(e.value)
    with pytest.raises(CapgapError, match="needs calibration batches"):
        score(tiny_model("gpt2"), None, method="taylor")
    assert get_method("random").needs_data is False
    assert all(name in help_lines() for name in METHODS)


@pytest.mark.parametrize("method", ["activation", "taylor", "block_influence"])
def test_scoring_leaves_the_model_as_it_was(method: str) -> None:
    model = tiny_model("gpt_neox").train()
    model.gpt_neox.layers[0].mlp.dense_h_to_4h.weight.requires_grad_(False)
    flags = [p.requires_grad for p in model.parameters()]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    score(model, calib(1), method=method)
    assert model.training and [p.requires_grad for p in model.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
