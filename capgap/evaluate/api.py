"""Evaluate a model given by path or name (the API behind ``capgap eval``)."""

from __future__ import annotations

from typing import Any

import torch

from capgap.data.corpus import load_corpus, validation_text
from capgap.evaluate.heldout import evaluate_text, model_context
from capgap.models.anymodel import load_any_model
from capgap.runs import env_threads


def evaluate_model(model: str, corpus: str = "default", max_bytes: int = 0, seq_len: int = 0,
                   batch_size: int = 8) -> dict[str, Any]:
    """Held-out loss/ppl/bpb of ``model`` on the validation split of ``corpus``."""
    torch.set_num_threads(env_threads())
    net, tokenizer = load_any_model(model)
    text = validation_text(load_corpus(corpus), max_bytes or None)
    res = evaluate_text(net, tokenizer, text, seq_len or model_context(net), batch_size)
    return {"model": model, "corpus": corpus, **res.to_dict()}
