"""Bootstrap confidence intervals for the law and for each size's best teacher.

Two sources of uncertainty, resampled at two levels (a two-stage bootstrap):

* **seeds** — measurement noise. Within every (student size, teacher) group the cells
  (seeds) are resampled with replacement, the per-teacher means recomputed (their spread
  widened by √(m/(m−1)) so that its variance is the unbiased s²/m even for m = 2 seeds)
  and the best teacher found again. Needs >= 2 cells in every group; gives each size's T*
  interval.
* **sizes** — scatter of the (S, T*) points around the line. The fitted student sizes are
  resampled with replacement (a pairs bootstrap; draws with < 2 distinct sizes are redrawn).

``seeds+sizes`` (the default when every group has >= 2 seeds) does both: each drawn size gets
its own independent seed resample. With a single seed per group only ``sizes`` is possible;
a points file is always ``sizes``. Intervals are percentile intervals: robust for the
discrete, skewed distributions an argmin produces (BCa would need a jackknife that a
quantised argmin makes unstable). Replicates with no defined optimum (quadratic vertex
missing) are dropped and counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capgap.errors import CapgapError
from capgap.law.fit import linear_batch, ratio_batch
from capgap.law.optimum import SizeCurve, batch_optimum

CI_METHODS = ("auto", "seeds+sizes", "seeds", "sizes")


@dataclass
class Replicates:
    """Bootstrap replicates of the law's parameters; NaN marks a dropped replicate."""

    slope: np.ndarray  # (B,)
    intercept: np.ndarray  # (B,)
    ratio: np.ndarray  # (B,)

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.slope) & np.isfinite(self.intercept) & np.isfinite(self.ratio)


def has_seeds(curve: SizeCurve) -> bool:
    """True when every teacher of the size has >= 2 cells to resample."""
    return min(curve.n_obs) >= 2


def resolve_method(requested: str, curves: list[SizeCurve] | None) -> str:
    """The method actually used; ``curves`` is None for a points source."""
    if requested not in CI_METHODS:
        raise CapgapError(f"unknown CI method {requested!r} (use one of {', '.join(CI_METHODS)})")
    seeds_ok = curves is not None and bool(curves) and all(has_seeds(c) for c in curves)
    if requested == "auto":
        return "seeds+sizes" if seeds_ok else "sizes"
    if "seeds" in requested and not seeds_ok:
        why = "a points file has no seeds" if curves is None else \
            "every (student size, teacher) needs >= 2 seeds"
        raise CapgapError(f"CI method {requested!r} is not possible: {why}; use sizes or auto")
    return requested


def seed_replicates(curve: SizeCurve, sign: float, method: str, shape: tuple[int, int],
                    rng: np.random.Generator) -> np.ndarray:
    """Best teacher of ``curve`` under ``shape`` = (B, W) independent seed resamples."""
    n = shape[0] * shape[1]
    means = np.empty((n, curve.teachers.size))
    for j, obs in enumerate(curve.values):
        boot = obs[rng.integers(0, obs.size, size=(n, obs.size))].mean(axis=1)
        # Resampled means vary by s²·(m−1)/m² instead of s²/m; widen them by √(m/(m−1))
        # so 2–4 seeds do not give intervals ~30 % too narrow.
        inflate = np.sqrt(obs.size / (obs.size - 1)) if obs.size > 1 else 1.0
        means[:, j] = obs.mean() + inflate * (boot - obs.mean())
    return batch_optimum(curve.teachers, sign * means, method).reshape(shape)


def size_draws(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(B, n) indices of sizes drawn with replacement, each row with >= 2 distinct sizes."""
    idx = rng.integers(0, n, size=(n_boot, n))
    for _ in range(1000):
        bad = np.all(idx == idx[:, :1], axis=1)
        if not bad.any():
            return idx
        idx[bad] = rng.integers(0, n, size=(int(bad.sum()), n))
    raise CapgapError("bootstrap could not draw two distinct student sizes")  # n < 2


def bootstrap_law(s: np.ndarray, t_hat: np.ndarray, seed_reps: np.ndarray | None,
                  resample_sizes: bool, n_boot: int, rng: np.random.Generator) -> Replicates:
    """Refit both laws on each replicate.

    ``s``, ``t_hat`` (n,) are the fitted points; ``seed_reps`` (n, B, n) holds each size's
    seed-resampled T* (None: points are fixed); ``resample_sizes`` adds the pairs level.
    """
    n = s.size
    idx = size_draws(n, n_boot, rng) if resample_sizes else np.tile(np.arange(n), (n_boot, 1))
    if seed_reps is None:
        t = t_hat[idx]
    else:
        rows = np.arange(n_boot)[:, None]
        cols = np.arange(n)[None, :]
        t = seed_reps[idx, rows, cols]  # position p of replicate b uses its own resample
    ss = s[idx]
    slope, intercept = linear_batch(ss, t)
    ratio = ratio_batch(ss, t)
    bad = ~np.all(np.isfinite(t), axis=1)
    for arr in (slope, intercept, ratio):
        arr[bad] = np.nan
    return Replicates(slope, intercept, ratio)


def percentile_ci(values: np.ndarray, level: float) -> list[float] | None:
    """[low, high] percentile interval of the finite values; None if there are none."""
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return None
    tail = 100 * (1 - level) / 2
    lo, hi = np.percentile(v, [tail, 100 - tail])
    return [float(lo), float(hi)]
