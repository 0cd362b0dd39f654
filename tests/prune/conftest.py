"""Tiny random models for pruning tests, built straight from transformers configs."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    Gemma2Config,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    Olmo2Config,
    Phi3Config,
    Qwen2Config,
    Qwen3Config,
)

VOCAB = 128
ARCHS = ("gpt2", "gpt_neox", "llama", "llama3", "qwen2", "qwen3", "gemma2", "gemma3_text", "phi3",
         "olmo2")
# GQA with head_dim decoupled from hidden / heads (16 != 48 / 6): the modern families' shape.
_GQA = {"hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 3,
        "head_dim": 16, "intermediate_size": 72, "max_position_embeddings": 64}
# Sliding-window/global layer pattern with a window short enough to matter at 12-16 tokens.
_PATTERN = ["sliding_attention", "full_attention", "sliding_attention", "full_attention"]


def tiny_config(arch: str, variant: str = "base", **over):  # noqa: ANN201 - a PretrainedConfig
    """4-layer configs; ``variant`` switches the layout options pruning must respect."""
    common = {"vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 0}
    if arch == "gpt2":
        kw = {"n_embd": 32, "n_layer": 4, "n_head": 4, "n_positions": 64, "n_inner": 96}
        if variant == "alt":  # renumbered layers must keep their 1/(layer_idx+1) scale
            kw["scale_attn_by_inverse_layer_idx"] = True
        return GPT2Config(**(common | kw | over))
    if arch == "gpt_neox":
        kw = {"hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
              "intermediate_size": 80, "max_position_embeddings": 64}
        if variant == "alt":  # sequential residual, tied head
            kw |= {"use_parallel_residual": False, "tie_word_embeddings": True}
        return GPTNeoXConfig(**(common | kw | over))
    if arch in _MODERN:
        return _MODERN[arch](common, variant, over)
    kw = {"hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2,
          "intermediate_size": 72, "max_position_embeddings": 64}
    if variant == "alt":  # biases everywhere (Qwen2-like), tied head
        kw |= {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}
    return LlamaConfig(**(common | kw | over))


def _llama3(common: dict, variant: str, over: dict):  # noqa: ANN202
    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 8, "rope_theta": 500000.0}
    kw = _GQA | {"rope_parameters": rope, "tie_word_embeddings": variant == "alt"}
    return LlamaConfig(**(common | kw | over))


def _qwen2(common: dict, variant: str, over: dict):  # noqa: ANN202
    kw = _GQA | {"tie_word_embeddings": variant == "alt"}
    if variant == "base":  # the top layers slide: dropped layers must not shift the pattern
        kw |= {"use_sliding_window": True, "sliding_window": 4, "max_window_layers": 2}
    return Qwen2Config(**(common | kw | over))


def _qwen3(common: dict, variant: str, over: dict):  # noqa: ANN202
    kw = _GQA | {"tie_word_embeddings": variant == "alt"}
    if variant == "alt":
        kw |= {"attention_bias": True, "layer_types": _PATTERN, "sliding_window": 4,
               "use_sliding_window": True}
    return Qwen3Config(**(common | kw | over))


def _gemma(cls):  # noqa: ANN001, ANN202
    def make(common: dict, variant: str, over: dict):  # noqa: ANN202
        kw = _GQA | {"layer_types": _PATTERN, "sliding_window": 4, "query_pre_attn_scalar": 16}
        if variant == "alt":  # untied head, biased attention
            kw |= {"tie_word_embeddings": False, "attention_bias": True}
        return cls(**(common | kw | over))

    return make


def _phi3(common: dict, variant: str, over: dict):  # noqa: ANN202
    kw = _GQA | {"tie_word_embeddings": variant == "alt", "pad_token_id": 0}
    if variant == "alt":  # no GQA, partial rotary
        kw |= {"num_key_value_heads": 6, "partial_rotary_factor": 0.5}
    return Phi3Config(**(common | kw | over))


def _olmo2(common: dict, variant: str, over: dict):  # noqa: ANN202
    kw = _GQA | {"tie_word_embeddings": variant == "alt", "pad_token_id": 0}
    if variant == "alt":
        kw |= {"attention_bias": True, "num_key_value_heads": 6}
    return Olmo2Config(**(common | kw | over))


_MODERN = {"llama3": _llama3, "qwen2": _qwen2, "qwen3": _qwen3, "gemma2": _gemma(Gemma2Config),
           "gemma3_text": _gemma(Gemma3TextConfig), "phi3": _phi3, "olmo2": _olmo2}


def tiny_model(arch: str, variant: str = "base", seed: int = 0, dtype=torch.float64, **over):  # noqa: ANN001, ANN201
    """A random model in eval mode; float64 so parity can be checked tightly."""
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(arch, variant, **over)).to(dtype).eval()
    with torch.no_grad():  # random norms and biases, so leaks and wrong slices show
        for name, p in model.named_parameters():
            if "norm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.2)
    return model


def calib(n: int = 3, batch: int = 4, seq: int = 16, seed: int = 1) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (batch, seq), generator=g) for _ in range(n)]


@pytest.fixture
def tokens() -> torch.Tensor:
    return torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(7))
