"""Scratch students: every weight matrix is redrawn, whatever its module class."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from capgap.models.init import reinitialise


def test_reinitialise_redraws_gpt2_conv1d_weights():
    model = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=64,
                                       n_positions=16, bos_token_id=0, eos_token_id=0))
    with torch.no_grad():  # a known state: the constructor's own draws could match ours
        for w in model.parameters():
            w.fill_(0.5)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    reinitialise(model, seed=0)
    after = model.state_dict()
    kept = [k for k, v in after.items() if v.ndim == 2 and torch.equal(v, before[k])]
    assert kept == []  # c_attn / c_fc / c_proj are Conv1D: they must change too
    again = GPT2LMHeadModel(model.config)
    reinitialise(again, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(after.values(), again.state_dict().values(),
                                                 strict=True))
