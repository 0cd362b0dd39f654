"""The definitions every stage shares: the noise floor, the signal rule, the paper's ratio and
the law's fitting defaults.

One home, so that a sweep's own law, ``capgap law fit`` on the same folder and a study's
pooled laws give the same answer, and law.json records which values made it.
"""

from __future__ import annotations

NOISE_FLOOR = 0.004
"""Smallest seed noise assumed, in nats: measured here, two data orders differed by at most
0.004 at 150k tokens, and three seeds at 2M by a standard deviation of at most 0.0022."""

SIGNAL = 3.0
"""An effect counts when it exceeds this many times the seed noise (teachers within it of
the best are tied)."""

PAPER_RATIO = 2.5
"""Zhang et al. 2023: T* ≈ 2.5·S in total parameters."""

LAW_BOOTSTRAP = 1000
"""Bootstrap resamples behind every law's interval."""

LAW_CI = 0.95
"""Interval level of every law."""

TRAINED_TOKENS_PER_PARAM = 10.0
"""A teacher counts as trained from this many training tokens per parameter (Chinchilla's
compute-optimal point is about 20): below it a bigger teacher is barely a better one."""

LOW_EMBEDDING = 0.35
"""A teacher counts as low-embedding when at most this fraction of its parameters are
embeddings: above it, pruning to a small student mostly cuts the transformer away."""
