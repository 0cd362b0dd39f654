"""MiniMA shape rule: the paper's 7B -> 3B shape, exact counts, loadable shapes, bad input."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    Olmo2Config,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

from capgap.errors import CapgapError
from capgap.models.arch import count_shape
from capgap.models.params import count_params_from_config
from capgap.recipe.shapes import geometry, minima_shape, reshape_config

LLAMA2_7B = LlamaConfig(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                        intermediate_size=11008, vocab_size=32000)


def test_llama2_7b_to_minima_3b():
    """The paper's shape: drop 4 bottom + 4 top layers, hidden 3072, 24 heads, FFN 8192."""
    minima = LlamaConfig(hidden_size=3072, num_hidden_layers=24, num_attention_heads=24,
                         intermediate_size=8192, vocab_size=32000)
    target = count_params_from_config(minima).total  # 2.915e9 with LLaMA2's vocabulary
    for t in (target, round(target * 1.007)):  # "about MiniMA-3B's size"
        s = minima_shape(LLAMA2_7B, t)
        assert s.layers_kept == list(range(4, 28))
        assert (s.hidden, s.heads, s.kv_heads, s.ffn) == (3072, 24, 24, 8192)
        assert s.params == target and abs(s.error) <= 0.01


@pytest.mark.parametrize("config", [
    LLAMA2_7B,
    LlamaConfig(hidden_size=512, num_hidden_layers=6, num_attention_heads=8, num_key_value_heads=2,
                intermediate_size=1408, vocab_size=1000, tie_word_embeddings=True, attention_bias=True,
                mlp_bias=True),
    Qwen2Config(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
                intermediate_size=704, vocab_size=500),
    GPTNeoXConfig(hidden_size=256, num_hidden_layers=8, num_attention_heads=4, intermediate_size=1024,
                  vocab_size=500),
    GPT2Config(n_embd=256, n_layer=4, n_head=4, vocab_size=500, n_positions=128),
    *[cls(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2,
          head_dim=64, intermediate_size=704, vocab_size=500, pad_token_id=0)
      for cls in (Qwen3Config, Gemma2Config, Phi3Config, Olmo2Config)],
    # Qwen3-0.6B's decoupled head_dim (16 heads x 128 = 2x hidden), scaled down
    Qwen3Config(hidden_size=256, num_hidden_layers=6, num_attention_heads=16, num_key_value_heads=8,
                head_dim=32, intermediate_size=768, vocab_size=500),
], ids=["llama2-7b", "llama-gqa-bias-tied", "qwen2", "gpt_neox", "gpt2", "qwen3", "gemma2", "phi3",
        "olmo2", "qwen3-decoupled"])
def test_shape_is_exact_loadable_and_within_tolerance(config):
    """Analytic count == count_params_from_config; the reshaped config builds a vanilla model."""
    assert count_shape(config).total == count_params_from_config(config).total
    g = geometry(config)
    s = minima_shape(config, int(count_shape(config).total * 0.45))
    assert abs(s.error) <= 0.01
    assert s.heads * g.hidden == s.hidden * g.n_heads and s.heads % s.kv_heads == 0  # ratio kept
    assert s.heads // s.kv_heads == g.group_size  # GQA group kept
    student = reshape_config(config, s)
    assert count_params_from_config(student).total == s.params
    if s.params < 5e7:  # small enough to build for real: a forward pass works
        model = AutoModelForCausalLM.from_config(student)
        assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, config.vocab_size)


def test_large_model_shapes_are_gpu_multiples():
    s = minima_shape(LLAMA2_7B, 1_300_000_000)
    assert s.hidden % 128 == 0 and s.ffn % 256 == 0
    assert "step" in s.binding


def test_fixed_drop_layers_and_bad_input():
    s = minima_shape(LLAMA2_7B, 3_500_000_000, drop_layers=2)
    assert s.layers_kept == list(range(2, 30))
    with pytest.raises(CapgapError, match="not smaller than the teacher"):
        minima_shape(LLAMA2_7B, 7_000_000_000)
    with pytest.raises(CapgapError, match="the closest is"):
        minima_shape(LLAMA2_7B, 6_000_000_000, drop_layers=15)  # 2 layers cannot hold 6B
    with pytest.raises(CapgapError, match="leaves no layers"):
        minima_shape(LLAMA2_7B, 1_000_000_000, drop_layers=16)
