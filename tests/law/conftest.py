"""Synthetic sweeps with a known answer: metric(T; S) = c + w·(ln T − ln(k·S))² + noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from capgap.law import Cell

K_TRUE = 2.5
STEP = K_TRUE ** 0.25  # teacher grid ratio: k·S lands exactly on a teacher
BASE = 1e6


def synth_cells(n_sizes: int = 5, seeds: int = 3, noise: float = 0.01, k: float = K_TRUE,
                width: float = 0.2, rng_seed: int = 0, extra_teachers: int = 4,
                low_teachers: int = 3) -> list[Cell]:
    """Students S_i = BASE·STEP^(2i); teachers on the STEP grid from ``low_teachers`` steps
    below k·S to ``extra_teachers`` above it (only teachers larger than the student)."""
    rng = np.random.default_rng(rng_seed)
    cells = []
    for i in range(n_sizes):
        s = BASE * STEP ** (2 * i)
        centre = 2 * i + round(np.log(k) / np.log(STEP))
        for j in range(centre - low_teachers, centre + extra_teachers + 1):
            t = BASE * STEP ** j
            if t <= s:
                continue
            for seed in range(seeds):
                m = 3.0 + width * (np.log(t) - np.log(k * s)) ** 2 + rng.normal(0, noise)
                cells.append(Cell(s, t, float(m), seed=str(seed),
                                  fields={"objective": "soft_ce", "seed": seed}))
    return cells


@pytest.fixture
def make_cells() -> Callable[..., list[Cell]]:
    return synth_cells
