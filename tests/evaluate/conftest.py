"""A tiny random LLaMA with the session's 300-token BPE, saved once for CLI tests."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig


def tiny_llama(vocab: int, seed: int = 0):  # noqa: ANN201 - a LlamaForCausalLM
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, intermediate_size=64,
                      max_position_embeddings=256)
    return AutoModelForCausalLM.from_config(cfg).eval()


@pytest.fixture(scope="session")
def tiny_lm(tiny_tokenizer):
    """(model, tokenizer): random weights, so scores are chance-level but well defined."""
    return tiny_llama(len(tiny_tokenizer)), tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_lm_dir(tiny_lm, tmp_path_factory):
    from capgap.models.io import save_model

    model, tok = tiny_lm
    return save_model(model, tok, tmp_path_factory.mktemp("lm") / "tiny")
