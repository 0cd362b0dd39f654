"""count_params against parameter counts written out by hand, per architecture."""

from __future__ import annotations

import pytest
import torch

from capgap.models import ParamCount, build_model, count_params, count_params_from_config
from tests.models.conftest import FFN, HEADS, HIDDEN, KV_HEADS, LAYERS, SEQ, VOCAB, tiny_config

V, H, L, F = VOCAB, HIDDEN, LAYERS, FFN
D = H // HEADS  # head dim


def linear(n_in: int, n_out: int, bias: bool = True) -> int:
    return n_in * n_out + (n_out if bias else 0)


def gpt2_hand(tied: bool) -> ParamCount:
    layer = (
        2 * H  # ln_1 (weight, bias)
        + linear(H, 3 * H)  # c_attn: fused q, k, v
        + linear(H, H)  # attn c_proj
        + 2 * H  # ln_2
        + linear(H, F)  # mlp c_fc
        + linear(F, H)  # mlp c_proj
    )
    wte, wpe = V * H, SEQ * H  # learned positions are embedding parameters too
    head = 0 if tied else V * H
    total = wte + wpe + L * layer + 2 * H + head  # + ln_f
    return ParamCount(total=total, non_embedding=total - wte - wpe)


def neox_hand(tied: bool) -> ParamCount:
    layer = (
        2 * H  # input_layernorm
        + 2 * H  # post_attention_layernorm
        + linear(H, 3 * H)  # query_key_value
        + linear(H, H)  # attention.dense
        + linear(H, F)  # dense_h_to_4h
        + linear(F, H)  # dense_4h_to_h
    )
    embed = V * H  # rotary has no parameters
    head = 0 if tied else V * H  # embed_out, no bias
    total = embed + L * layer + 2 * H + head  # + final_layer_norm
    return ParamCount(total=total, non_embedding=total - embed)


def llama_hand(tied: bool, qkv_bias: bool = False) -> ParamCount:
    q, kv = HEADS * D, KV_HEADS * D  # GQA: k and v are narrower than q
    layer = (
        H  # input_layernorm (RMSNorm: weight only)
        + linear(H, q, qkv_bias)
        + 2 * linear(H, kv, qkv_bias)  # k_proj, v_proj
        + linear(q, H, False)  # o_proj
        + H  # post_attention_layernorm
        + 3 * linear(H, F, False)  # gate_proj, up_proj, down_proj (SwiGLU)
    )
    embed = V * H
    head = 0 if tied else V * H
    total = embed + L * layer + H + head  # + final norm
    return ParamCount(total=total, non_embedding=total - embed)


CASES = [
    ("gpt2", True, gpt2_hand(True)),
    ("gpt2", False, gpt2_hand(False)),
    ("gpt_neox", False, neox_hand(False)),
    ("gpt_neox", True, neox_hand(True)),
    ("llama", False, llama_hand(False)),
    ("llama", True, llama_hand(True)),
    ("mistral", False, llama_hand(False)),
    ("qwen2", False, llama_hand(False, qkv_bias=True)),
]


@pytest.mark.parametrize(
    ("kind", "tie", "expected"), CASES, ids=[f"{k}-tie{t}" for k, t, _ in CASES]
)
def test_count_matches_hand_count(kind: str, tie: bool, expected: ParamCount) -> None:
    config = tiny_config(kind, tie=tie)
    torch.manual_seed(0)
    model = build_model(config)
    assert (model.get_output_embeddings().weight is model.get_input_embeddings().weight) == tie
    assert count_params(model) == expected
    assert count_params_from_config(config) == expected


def test_tying_moves_head_out_of_non_embedding() -> None:
    """An untied head is a separate matrix counted in non_embedding; a tied one is not."""
    for kind in ("gpt2", "gpt_neox", "llama"):
        tied = count_params_from_config(tiny_config(kind, tie=True))
        untied = count_params_from_config(tiny_config(kind, tie=False))
        assert untied.total - tied.total == V * H
        assert untied.non_embedding - tied.non_embedding == V * H
        assert untied.embedding == tied.embedding
