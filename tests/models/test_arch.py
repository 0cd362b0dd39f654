"""Supported layouts, llama-like flags, and the attention implementation choice."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, BertConfig, Qwen2Config, T5Config

from capgap.errors import CapgapError
from capgap.models import ATTN_IMPLEMENTATION, SUPPORTED_ARCHS, arch_info, arch_of, build_model
from tests.models.conftest import tiny_config


@pytest.mark.parametrize(
    ("kind", "arch", "qkv_bias"),
    [
        ("gpt2", "gpt2", True),
        ("gpt_neox", "gpt_neox", True),
        ("llama", "llama", False),
        ("mistral", "llama", False),
        ("qwen2", "llama", True),
    ],
)
def test_arch_of_supported_configs(kind: str, arch: str, qkv_bias: bool) -> None:
    config = tiny_config(kind)
    assert arch_of(config) == arch and arch in SUPPORTED_ARCHS
    info = arch_info(config)
    assert (info.model_type, info.qkv_bias) == (kind, qkv_bias)
    if arch == "llama":  # the flag must agree with the module transformers actually builds
        attn = build_model(config).model.layers[0].self_attn
        assert (attn.q_proj.bias is not None) == info.qkv_bias
        assert (attn.o_proj.bias is not None) == info.o_bias


def test_mistral_sliding_window_is_reported() -> None:
    config = tiny_config("mistral")
    config.sliding_window = 8
    assert arch_info(config).sliding_window == 8


def test_qwen2_with_sliding_layers_is_refused() -> None:
    config = Qwen2Config(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        intermediate_size=48,
        vocab_size=100,
        use_sliding_window=True,
        max_window_layers=1,
    )
    with pytest.raises(CapgapError, match="qwen2 config has sliding-window layers"):
        arch_of(config)


@pytest.mark.parametrize("config", [BertConfig(), T5Config()], ids=["bert", "t5"])
def test_unsupported_arch_names_the_supported_ones(config) -> None:  # noqa: ANN001
    with pytest.raises(
        CapgapError, match=r"unsupported architecture '(bert|t5)'.*gpt2, gpt_neox, llama"
    ):
        build_model(config)


@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox", "llama"])
def test_sdpa_is_deterministic_and_matches_eager(kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(kind)).eval()
    assert model.config._attn_implementation == ATTN_IMPLEMENTATION == "sdpa"
    eager = AutoModelForCausalLM.from_config(model.config, attn_implementation="eager").eval()
    eager.load_state_dict(model.state_dict())
    ids = torch.randint(0, 100, (2, 16))
    mask = torch.ones_like(ids)
    mask[1, :5] = 0  # left padding exercises the masked path
    with torch.no_grad():
        first = model(ids, attention_mask=mask).logits
        second = model(ids, attention_mask=mask).logits
        reference = eager(ids, attention_mask=mask).logits
    assert torch.equal(first, second)
    torch.testing.assert_close(first[:, 5:], reference[:, 5:])
