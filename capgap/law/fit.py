"""The two fits of T* against S, their R², and leave-one-size-out extrapolation error.

* linear: T* = a·S + b, ordinary least squares;
* proportional: T* = k·S, least squares through the origin, k = Σ S·T* / Σ S².

R² is 1 − SS_res / SS_tot with SS_tot = Σ (T* − mean T*)² — the *centred* total sum of
squares — for both fits. For the through-origin fit this is deliberately not the uncentred
R² (SS_tot = Σ T*²) that many packages report: that one is near 1 for almost any positive
data and is not comparable with the linear R². The centred one can be negative when the
proportional law fits worse than a constant. R² is None when all T* are equal (SS_tot = 0).
Fits are in raw size units, as in the paper, so the largest sizes weigh most.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LineFit:
    """T* = slope·S + intercept and its R²."""

    slope: float
    intercept: float
    r2: float | None


@dataclass(frozen=True)
class RatioFit:
    """T* = ratio·S and its (centred) R²."""

    ratio: float
    r2: float | None


def r_squared(t: np.ndarray, pred: np.ndarray) -> float | None:
    """1 − SS_res/SS_tot with the centred SS_tot; None when SS_tot is 0."""
    ss_tot = float(np.sum((t - t.mean()) ** 2))
    if ss_tot <= 0:
        return None
    return 1.0 - float(np.sum((t - pred) ** 2)) / ss_tot


def fit_linear(s: np.ndarray, t: np.ndarray) -> LineFit:
    """Least-squares line through (S, T*); needs >= 2 distinct S."""
    slope, intercept = linear_batch(s[None, :], t[None, :])
    return LineFit(float(slope[0]), float(intercept[0]), r_squared(t, slope[0] * s + intercept[0]))


def fit_ratio(s: np.ndarray, t: np.ndarray) -> RatioFit:
    """Least-squares T* = k·S through the origin."""
    k = float(ratio_batch(s[None, :], t[None, :])[0])
    return RatioFit(k, r_squared(t, k * s))


def linear_batch(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Slopes and intercepts of one least-squares line per row of ``s``, ``t`` (B, n).

    NaN for a row whose S are all equal.
    """
    sc = s - s.mean(axis=1, keepdims=True)
    tc = t - t.mean(axis=1, keepdims=True)
    var = np.sum(sc * sc, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = np.where(var > 0, np.sum(sc * tc, axis=1) / var, np.nan)
    return slope, t.mean(axis=1) - slope * s.mean(axis=1)


def ratio_batch(s: np.ndarray, t: np.ndarray) -> np.ndarray:
    """k = Σ S·T / Σ S² per row of ``s``, ``t`` (B, n)."""
    return np.sum(s * t, axis=1) / np.sum(s * s, axis=1)


def leave_one_out(s: np.ndarray, t: np.ndarray) -> dict:
    """Fit on all sizes but one, predict the one left out; for every size.

    Relative error = (predicted − observed) / observed. The entry of the largest size is a
    true extrapolation test, the others interpolation (or extrapolation downwards).
    """
    per_size = []
    for i in range(s.size):
        rest = np.arange(s.size) != i
        line = linear_batch(s[None, rest], t[None, rest])
        lin = float(line[0][0] * s[i] + line[1][0])
        rat = float(ratio_batch(s[None, rest], t[None, rest])[0] * s[i])
        per_size.append({
            "student_params": float(s[i]),
            "teacher_params": float(t[i]),
            "linear_pred": _finite(lin),
            "linear_rel_err": _finite((lin - t[i]) / t[i]),
            "ratio_pred": rat,
            "ratio_rel_err": float((rat - t[i]) / t[i]),
        })
    return {
        "per_size": per_size,
        "linear_mare": _mare([p["linear_rel_err"] for p in per_size]),
        "ratio_mare": _mare([p["ratio_rel_err"] for p in per_size]),
    }


def _finite(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _mare(errors: list[float | None]) -> float | None:
    """Mean absolute relative error; None if any size could not be predicted."""
    if not errors or any(e is None for e in errors):
        return None
    return float(np.mean(np.abs(errors)))
