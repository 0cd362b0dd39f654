"""Batches as a pure function of (seed, step), and in-order evaluation windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from capgap.data import PackedLoader, eval_batches
from capgap.errors import CapgapError

TOKENS = np.arange(1003, dtype=np.uint16)  # 10 windows of 100, ragged tail of 3


def test_batch_is_made_of_whole_windows():
    loader = PackedLoader(TOKENS, seq_len=100, batch_size=4, seed=0)
    assert loader.num_windows == 10 and loader.tokens_per_step == 400
    batch = loader.batch(0)
    assert batch.shape == (4, 100) and batch.dtype == torch.long
    for row, w in zip(batch, loader.window_indices(0), strict=True):
        torch.testing.assert_close(row, torch.arange(w * 100, (w + 1) * 100))


def test_same_seed_same_batches_in_any_call_order():
    a = PackedLoader(TOKENS, 100, 3, seed=7)
    b = PackedLoader(TOKENS, 100, 3, seed=7)
    forward = [a.batch(s) for s in range(8)]
    backward = {s: b.batch(s) for s in (7, 2, 5, 0, 3, 6, 1, 4)}
    for s in range(8):
        torch.testing.assert_close(forward[s], backward[s])
    other = PackedLoader(TOKENS, 100, 3, seed=8)
    assert any(not torch.equal(forward[s], other.batch(s)) for s in range(8))


def test_every_window_once_per_epoch_even_when_batches_straddle_epochs():
    loader = PackedLoader(TOKENS, 100, 3, seed=1)  # 10 windows, 3 per step: steps straddle
    order = np.concatenate([loader.window_indices(s) for s in range(10)])  # 30 = 3 epochs
    for epoch in range(3):
        assert sorted(order[epoch * 10 : (epoch + 1) * 10]) == list(range(10))
    # The documented contract, so other tools can reproduce the order.
    np.testing.assert_array_equal(order[10:20], np.random.default_rng((1, 1)).permutation(10))
    assert not np.array_equal(order[:10], order[10:20])


def test_resuming_needs_no_state():
    long_run = PackedLoader(TOKENS, 100, 2, seed=3)
    seen = [long_run.batch(s) for s in range(20)]
    resumed = PackedLoader(TOKENS, 100, 2, seed=3)
    torch.testing.assert_close(resumed.batch(13), seen[13])


def test_reads_read_only_memmaps(tiny_token_store):
    loader = PackedLoader(tiny_token_store.train, seq_len=32, batch_size=4, seed=0)
    batch = loader.batch(5)
    batch += 1  # a writable copy, not a view of the cache
    assert int(batch.max()) <= tiny_token_store.vocab_size


def test_stream_smaller_than_a_batch_is_an_error():
    with pytest.raises(CapgapError, match=r"1003 tokens but one batch needs 11 x 100 = 1100"):
        PackedLoader(TOKENS, 100, 11)


@pytest.mark.parametrize("max_tokens", [None, 1003, 650, 500, 100])
def test_eval_batches_are_the_leading_windows_in_order(max_tokens):
    batches = list(eval_batches(TOKENS, seq_len=100, batch_size=4, max_tokens=max_tokens))
    n = len(TOKENS) if max_tokens is None else max_tokens
    assert all(b.shape[1] == 100 and b.shape[0] <= 4 and b.dtype == torch.long for b in batches)
    flat = torch.cat([b.reshape(-1) for b in batches])
    torch.testing.assert_close(flat, torch.arange(n // 100 * 100))
    assert [b.shape[0] for b in batches[:-1]] == [4] * (len(batches) - 1)


def test_eval_batches_need_one_full_window():
    with pytest.raises(CapgapError, match="at least seq_len = 100 tokens, got 99"):
        list(eval_batches(TOKENS, 100, 4, max_tokens=99))


def test_calibration_batches_are_the_first_training_batches_of_the_seed(tiny_corpus, tiny_tokenizer,
                                                                         tiny_token_store):
    from capgap.data import calibration_batches

    got = calibration_batches(tiny_corpus, tiny_tokenizer, tokens=100, seq_len=16, batch_size=3, seed=4)
    loader = PackedLoader(tiny_token_store.train, seq_len=16, batch_size=3, seed=4)
    assert len(got) == 3  # ceil(100 / 48)
    for i, batch in enumerate(got):
        torch.testing.assert_close(batch, loader.batch(i))
    with pytest.raises(CapgapError, match="smaller than one batch"):
        calibration_batches(tiny_corpus, tiny_tokenizer, tokens=47, seq_len=16, batch_size=3)
    with pytest.raises(CapgapError, match="without a tokenizer"):
        calibration_batches(tiny_corpus, None, tokens=100, seq_len=16, batch_size=3)
