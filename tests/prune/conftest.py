"""Tiny random models for pruning tests, built straight from transformers configs."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, GPT2Config, GPTNeoXConfig, LlamaConfig

VOCAB = 128
ARCHS = ("gpt2", "gpt_neox", "llama")


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
    kw = {"hidden_size": 48, "num_hidden_layers": 4, "num_attention_heads": 6, "num_key_value_heads": 2,
          "intermediate_size": 72, "max_position_embeddings": 64}
    if variant == "alt":  # biases everywhere (Qwen2-like), tied head
        kw |= {"attention_bias": True, "mlp_bias": True, "tie_word_embeddings": True}
    return LlamaConfig(**(common | kw | over))


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
