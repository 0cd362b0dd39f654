"""Tiny random causal LMs (GPT-2, GPT-NeoX, LLaMA with GQA, soft-capped Gemma 2) for
distillation-loss tests."""

from __future__ import annotations

import torch
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

VOCAB = 301  # odd on purpose: chunk sizes and vocab never line up
ARCHS = ("gpt2", "gpt_neox", "llama", "gemma2")


def tiny_lm(arch: str, hidden: int = 32, vocab: int = VOCAB, seed: int = 0) -> torch.nn.Module:
    """A 2-layer random model; dropout off so two forwards agree exactly."""
    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(
            n_embd=hidden, n_layer=2, n_head=2, vocab_size=vocab, n_positions=64,
            resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0, eos_token_id=0,
        )
        return GPT2LMHeadModel(cfg)  # head tied to the token embedding
    if arch == "gpt_neox":
        cfg = GPTNeoXConfig(
            hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=2 * hidden, vocab_size=vocab, max_position_embeddings=64,
            bos_token_id=0, eos_token_id=0,
        )
        return GPTNeoXForCausalLM(cfg)
    if arch == "llama":
        cfg = LlamaConfig(
            hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, intermediate_size=2 * hidden, vocab_size=vocab,
            max_position_embeddings=64, bos_token_id=0, eos_token_id=0,
        )
        return LlamaForCausalLM(cfg)
    if arch == "gemma2":  # a soft-cap small enough to bend random logits: the loss must apply it
        cfg = Gemma2Config(
            hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            head_dim=8, intermediate_size=2 * hidden, vocab_size=vocab, max_position_embeddings=64,
            final_logit_softcapping=0.5, bos_token_id=0, eos_token_id=0, pad_token_id=0,
        )
        return Gemma2ForCausalLM(cfg)
    raise ValueError(arch)


def pair(arch: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(student in train mode with hidden 32, frozen teacher in eval mode with hidden 48)."""
    student = tiny_lm(arch, hidden=32, seed=1).train()
    teacher = tiny_lm(arch, hidden=48, seed=2).eval().requires_grad_(False)
    return student, teacher


def batch(b: int = 3, t: int = 10, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """input_ids, labels (some -100) and an attention mask with right and left padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (b, t), generator=g)
    mask = torch.ones(b, t, dtype=torch.long)
    mask[0, -3:] = 0  # right padding
    if b > 2:
        mask[2, :2] = 0  # left padding
    labels = ids.clone()
    labels[1, 2:5] = -100  # e.g. a prompt not to be scored
    return ids, labels, mask
