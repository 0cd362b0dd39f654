"""Held-out loss, perplexity and bits per byte over a fixed validation text.

Bits per byte is what lets models with *different tokenizers* compare: every model is
scored on the identical UTF-8 text, so ``bpb = total_nats / ln 2 / text_bytes`` does not
depend on how the text was cut into tokens. To make that exact, the text is prefixed with
the tokenizer's BOS (or EOS) token and *every* text token is predicted exactly once:
windows of ``seq_len`` predictions overlap their neighbour by one token of context.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class EvalConfig:
    """Final held-out evaluation over the fixed validation text."""

    max_bytes: int = 0
    """Evaluate the first this-many bytes of the validation split (0: all of it)."""
    batch_size: int = 16


@dataclass(frozen=True)
class HeldoutResult:
    """Held-out scores; ``loss`` in nats per token."""

    loss: float
    ppl: float
    bpb: float
    tokens: int
    bytes: int
    seq_len: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def encode_text(tokenizer, text: str) -> tuple[list[int], int]:  # noqa: ANN001
    """Token ids of ``text`` prefixed by BOS (or EOS), and its UTF-8 byte count."""
    start = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    if start is None:
        raise ValueError("tokenizer has neither a BOS nor an EOS token")
    ids = [start, *tokenizer(text, add_special_tokens=False)["input_ids"]]
    return ids, len(text.encode("utf-8"))


@torch.no_grad()
def score_ids(
    model: nn.Module, ids: Sequence[int], seq_len: int, batch_size: int = 8,
    chunk: int = 4096,
) -> tuple[float, int]:
    """Sum of next-token NLL (nats) over ``ids[1:]`` and the number of predictions."""
    device = next(model.parameters()).device
    data = torch.tensor(ids, dtype=torch.long)
    n_pred = len(ids) - 1
    starts = list(range(0, n_pred, seq_len))
    total = torch.zeros((), dtype=torch.float64)
    was_training = model.training
    model.eval()
    for b in range(0, len(starts), batch_size):
        group = starts[b : b + batch_size]
        lengths = [min(seq_len, n_pred - s) for s in group]
        width = max(lengths)
        x = torch.zeros(len(group), width, dtype=torch.long)
        y = torch.full((len(group), width), -100, dtype=torch.long)
        mask = torch.zeros(len(group), width, dtype=torch.long)
        for r, (s, n) in enumerate(zip(group, lengths, strict=True)):
            x[r, :n] = data[s : s + n]
            y[r, :n] = data[s + 1 : s + n + 1]
            mask[r, :n] = 1
        logits = model(input_ids=x.to(device), attention_mask=mask.to(device)).logits
        flat, targets = logits.flatten(0, 1), y.flatten().to(device)
        for c in range(0, flat.shape[0], chunk):  # fp32 log-softmax, a chunk at a time
            total += F.cross_entropy(flat[c : c + chunk].float(), targets[c : c + chunk],
                                     ignore_index=-100, reduction="sum").double().cpu()
        del logits, flat
    model.train(was_training)
    return float(total), n_pred


def evaluate_text(
    model: nn.Module, tokenizer, text: str, seq_len: int, batch_size: int = 8,  # noqa: ANN001
) -> HeldoutResult:
    """Loss (nats/token), perplexity and bits per byte of ``model`` on ``text``."""
    ids, n_bytes = encode_text(tokenizer, text)
    nats, n = score_ids(model, ids, seq_len, batch_size)
    loss = nats / max(n, 1)
    return HeldoutResult(loss=loss, ppl=math.exp(min(loss, 700.0)),
                         bpb=nats / math.log(2) / max(n_bytes, 1), tokens=n, bytes=n_bytes,
                         seq_len=seq_len)


def model_context(model: nn.Module, default: int = 1024) -> int:
    """The longest window the model accepts (learned positions cap it), at most ``default``."""
    cfg = getattr(model, "config", None)
    limit = getattr(cfg, "max_position_embeddings", None) or getattr(cfg, "n_positions", None)
    return min(default, int(limit)) if limit else default
