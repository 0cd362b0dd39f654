"""Batches from a packed token stream, as a pure function of (seed, step).

A sweep trains dozens of models and any of them may be interrupted. If the batch at step
``k`` depends only on ``(seed, k)``, resuming needs no saved loader state and two runs with
the same seed see exactly the same data, which is what makes their losses comparable.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from capgap.data.corpus import Corpus, load_corpus
from capgap.data.tokens import TokenStore
from capgap.errors import CapgapError


class PackedLoader:
    """Random non-overlapping ``seq_len`` windows of ``tokens``, epoch by epoch.

    Window ``w`` is ``tokens[w*seq_len : (w+1)*seq_len]`` (the ragged tail is never used).
    Sample position ``p = step*batch_size + i`` is window ``perm_e[p % num_windows]`` with
    ``e = p // num_windows`` and ``perm_e = default_rng((seed, e)).permutation(num_windows)``,
    so every window appears exactly once per epoch and batches may straddle epochs.
    Labels are the inputs themselves: Hugging Face causal LMs shift internally.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int = 0) -> None:
        if seq_len < 1 or batch_size < 1:
            raise CapgapError(f"seq_len and batch_size must be positive ({seq_len}, {batch_size})")
        self.tokens = tokens
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.seed = seed
        self.num_windows = len(tokens) // seq_len
        if self.num_windows < batch_size:
            raise CapgapError(
                f"token stream has {len(tokens)} tokens but one batch needs "
                f"{batch_size} x {seq_len} = {batch_size * seq_len}; "
                "use more text or a smaller batch/sequence length"
            )
        self._perms: dict[int, np.ndarray] = {}

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    def permutation(self, epoch: int) -> np.ndarray:
        """Window order of ``epoch`` (the two most recent are kept: batches straddle epochs)."""
        if epoch not in self._perms:
            if len(self._perms) >= 2:
                self._perms.pop(min(self._perms))
            rng = np.random.default_rng((self.seed, epoch))
            self._perms[epoch] = rng.permutation(self.num_windows)
        return self._perms[epoch]

    def window_indices(self, step: int) -> np.ndarray:
        """Indices of the windows that make up batch ``step``; shape (B,)."""
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        positions = step * self.batch_size + np.arange(self.batch_size)
        epochs, offsets = np.divmod(positions, self.num_windows)
        return np.array([self.permutation(int(e))[o] for e, o in zip(epochs, offsets, strict=True)])

    def batch(self, step: int) -> torch.Tensor:
        """Input ids of batch ``step``; (B, T) int64."""
        starts = self.window_indices(step) * self.seq_len
        rows = [np.array(self.tokens[s : s + self.seq_len], dtype=np.int64) for s in starts]
        return torch.from_numpy(np.stack(rows))  # (B, T)


def eval_batches(
    tokens: np.ndarray, seq_len: int, batch_size: int, max_tokens: int | None = None
) -> Iterator[torch.Tensor]:
    """The first ``max_tokens`` tokens (all if None) as consecutive ``seq_len`` windows.

    Batches are (<=batch_size, seq_len) int64, in stream order. A tail shorter than
    ``seq_len`` is dropped: every window has full context and a fixed shape, and a 1-token
    tail would give a NaN loss. (Bits per byte over an exact text is capgap.evaluate's job.)
    """
    if seq_len < 1 or batch_size < 1:
        raise CapgapError(f"seq_len and batch_size must be positive ({seq_len}, {batch_size})")
    n = len(tokens) if max_tokens is None else min(max_tokens, len(tokens))
    windows = n // seq_len
    if windows == 0:
        raise CapgapError(
            f"evaluation needs at least seq_len = {seq_len} tokens, got {n} "
            f"({len(tokens)} in the stream, max_tokens={max_tokens})"
        )
    for first in range(0, windows, batch_size):
        last = min(first + batch_size, windows)
        chunk = np.array(tokens[first * seq_len : last * seq_len], dtype=np.int64)
        yield torch.from_numpy(chunk.reshape(last - first, seq_len))  # (B, T)


def calibration_batches(
    corpus: str | Corpus | None, tokenizer: Any, tokens: int, seq_len: int, batch_size: int, seed: int = 0,
) -> list[torch.Tensor]:
    """Training-split windows of ``corpus`` in ``tokenizer``, enough for ``tokens`` tokens.

    What pruning scores a model on: the validation split stays unseen, and the batches are
    :class:`PackedLoader` batches 0, 1, ... of ``seed``, so one seed means one calibration set.
    ``corpus``: a :class:`~capgap.data.Corpus` or a :func:`~capgap.data.load_corpus` source
    (None: the embedded corpus).
    Returns ``ceil(tokens / (batch_size * seq_len))`` tensors of shape (B, T).
    """
    if tokenizer is None:
        raise CapgapError("a model without a tokenizer cannot be scored on calibration text; "
                          "give it a tokenizer or reuse saved scores")
    corpus = corpus if isinstance(corpus, Corpus) else load_corpus(corpus)
    store = TokenStore.build_or_load(corpus, tokenizer)
    loader = PackedLoader(store.train, seq_len=seq_len, batch_size=batch_size, seed=seed)
    if tokens < loader.tokens_per_step:
        raise CapgapError(
            f"calibration tokens ({tokens}) are smaller than one batch "
            f"({batch_size} x {seq_len} = {loader.tokens_per_step} tokens)"
        )
    return [loader.batch(i) for i in range(math.ceil(tokens / loader.tokens_per_step))]
