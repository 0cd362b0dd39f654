"""Recommend a teacher size for a student of N parameters from a fitted law.

T* = a·N + b (the linear law) with a joint bootstrap interval (each replicate's a·N + b),
and T* = k·N (the proportional law) with k's interval times N. These are confidence
intervals for the law's value at N, not prediction intervals for one new sweep; the
law's leave-one-size-out errors say how far single sizes fall from it. When candidate
teachers are given they are ranked by |ln(T / T*)|: a factor 2 too big counts as much as a
factor 2 too small, which matches how teacher families are spaced.

A sweep too small for a law (fewer than 3 uncensored sizes) still bounds T*/S on its teacher
grid (:mod:`capgap.law.bracket`); :func:`predict_range` turns that bound into the range of
teacher sizes it allows for N, and sorts the candidates by how far they lie outside it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from capgap.errors import CapgapError
from capgap.law.bootstrap import percentile_ci
from capgap.law.bracket import common_text
from capgap.law.cells import AS_GIVEN
from capgap.results.defaults import PAPER_RATIO
from capgap.units import format_size

_REQUIRED = ("status", "slope", "intercept", "ratio", "ratio_ci", "size_range", "size_unit")

PAPER_SOURCE = (f"paper: Zhang et al. 2023 (arXiv 2311.07052), T* = {PAPER_RATIO:g}·S in total "
                "parameters")


def paper_law() -> dict[str, Any]:
    """The paper's published law, T* ≈ 2.5·S (total parameters), used when no law is given.

    It comes with no interval: the paper reports a point estimate (R² ≈ 0.996) only. Its
    size range is GPT-2/Pythia pilot students (~50M-1B), so extrapolation warnings apply.
    """
    return {"status": "ok", "slope": PAPER_RATIO, "intercept": 0.0, "ratio": PAPER_RATIO,
            "ratio_ci": None,
            "slope_ci": None, "intercept_ci": None, "size_range": [5e7, 1.2e9],
            "size_unit": "total parameters", "source": PAPER_SOURCE}


@dataclass
class Recommendation:
    """The teacher size a law recommends for one student size."""

    student_params: float
    teacher_linear: float  # a·N + b
    teacher_linear_ci: list[float] | None
    teacher_ratio: float  # k·N
    teacher_ratio_ci: list[float] | None
    target: float  # the T* candidates are ranked against
    basis: str  # "linear", or "ratio" when the linear law gives T* <= 0
    extrapolation: float | None  # factor outside the fitted size range, None inside it
    size_unit: str
    ci_level: float
    ranking: list[tuple[float, float]] = field(default_factory=list)  # (T, |ln T/T*|)
    warnings: list[str] = field(default_factory=list)
    source: str = "fitted"  # a law.json path, or the paper's published law

    @property
    def interval(self) -> list[float] | None:
        """The interval of the T* used (``target``): None for the paper's point estimate."""
        return self.teacher_linear_ci if self.basis == "linear" else self.teacher_ratio_ci

    @property
    def closest_teacher(self) -> float | None:
        return self.ranking[0][0] if self.ranking else None

    def to_dict(self) -> dict[str, Any]:
        return {"teacher_params": self.target, "interval": self.interval,
                "source": self.source, **asdict(self), "closest_teacher": self.closest_teacher}


@dataclass
class RangeRecommendation:
    """The teacher sizes a sweep without a law allows for one student size: its common T*/S
    bracket times N. A bound from the teacher grid (it assumes the metric is unimodal in
    teacher size and one ratio for every size), not a confidence interval."""

    student_params: float
    ratio_lo: float
    ratio_hi: float | None  # None: unbounded above (best teacher at the top of the grid)
    teacher_lo: float
    teacher_hi: float | None
    size_unit: str
    extrapolation: float | None  # factor outside the bracketed student sizes, None inside
    reference: float | None = None  # the paper's ratio, when the fit recorded it
    reference_inside: bool | None = None
    ranking: list[tuple[float, float]] = field(default_factory=list)  # (T, ln-distance out)
    warnings: list[str] = field(default_factory=list)
    source: str = "fitted"

    @property
    def inside(self) -> list[float]:
        """Candidate teachers inside the range."""
        return [t for t, d in self.ranking if d == 0.0]

    def to_dict(self) -> dict[str, Any]:
        return {"status": "range", **asdict(self), "inside": self.inside}


def read_law(path: str | Path) -> dict[str, Any]:
    """The JSON object in a law.json file, fitted or not; a one-line error when unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CapgapError(f"{path}: no such law file (write one with capgap law fit)")
    try:
        law = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CapgapError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(law, dict):
        raise CapgapError(f"{path}: not a capgap law (a JSON object is expected)")
    return law


def load_law(path: str | Path) -> dict[str, Any]:
    """Read a law.json written by ``capgap law fit``; refuse files that hold no usable law."""
    return check_law(read_law(path), str(path))


def predict_range(law: Mapping[str, Any] | str | Path, student_params: float,
                  teachers: Sequence[float] | None = None) -> RangeRecommendation:
    """The teacher range a law.json's common T*/S bracket allows for ``student_params``, with
    ``teachers`` sorted by |ln| distance outside it (0 inside; ties inside by distance to the
    range's geometric middle, or by size when it is unbounded above)."""
    source = str(law) if isinstance(law, (str, Path)) else None
    law = read_law(law) if isinstance(law, (str, Path)) else dict(law)
    name = source or "law"
    bracket = law.get("bracket") or {}
    reason = _reason(law)
    if not bracket.get("common"):
        why = ("its sizes admit no single T*/S" if bracket.get("n_sizes")
               else "it holds no T*/S bracket")
        raise CapgapError(f"{name}: no law was fitted ({reason}) and no teacher range to "
                          f"offer: {why}")
    n = _positive(student_params)
    lo, hi = bracket["common"]
    sizes = [b["student_params"] for b in bracket["sizes"]]
    rec = RangeRecommendation(
        student_params=n, ratio_lo=float(lo), ratio_hi=None if hi is None else float(hi),
        teacher_lo=lo * n, teacher_hi=None if hi is None else hi * n,
        size_unit=law.get("size_unit", AS_GIVEN),
        extrapolation=_extrapolation([min(sizes), max(sizes)], n),
        reference=bracket.get("reference"), reference_inside=bracket.get("reference_inside"),
        source=law.get("source") or source or "fitted")
    rec.warnings.append(f"no law was fitted ({reason}); this is the range the teacher grid "
                        "allows if the metric is unimodal in teacher size and one T*/S holds "
                        "for every size, not a confidence interval")
    if rec.extrapolation is not None:
        rec.warnings.append(_extrapolation_warning(rec.extrapolation, [min(sizes), max(sizes)],
                                                   n, law.get("size_unit"), "bracketed"))
    if teachers:
        rec.ranking = _rank_by_range(teachers, rec.teacher_lo, rec.teacher_hi)
    return rec


def _rank_by_range(teachers: Sequence[float], lo: float,
                   hi: float | None) -> list[tuple[float, float]]:
    """Candidates sorted by how far outside (lo, hi) they lie in |ln T|; 0 inside."""
    ts = _sizes(teachers)

    def outside(t: float) -> float:
        if t <= lo:
            return math.log(lo / t)
        return math.log(t / hi) if hi is not None and t >= hi else 0.0

    middle = None if hi is None else math.sqrt(lo * hi)
    return sorted(((t, outside(t)) for t in ts),
                  key=lambda p: (p[1], abs(math.log(p[0] / middle)) if middle else p[0], p[0]))


def check_law(law: Any, name: str = "law") -> dict[str, Any]:
    """The law if it can be used for predictions, else a one-line error saying why."""
    if not isinstance(law, Mapping) or any(k not in law for k in _REQUIRED):
        raise CapgapError(f"{name}: not a capgap law (needs keys {', '.join(_REQUIRED)})")
    if law["status"] != "ok":
        common = common_text(law.get("bracket"))
        hint = ("" if not common else f"; its sizes bound T*/S to {common}, a range, not a "
                "law (capgap law predict prints the teacher range it allows)")
        raise CapgapError(f"{name}: no law was fitted "
                          f"({_reason(law)}){hint}")
    return dict(law)


def predict(law: Mapping[str, Any] | str | Path, student_params: float,
            teachers: Sequence[float] | None = None) -> Recommendation:
    """Recommend T* for ``student_params`` (in the law's size unit) and rank ``teachers``."""
    source = str(law) if isinstance(law, (str, Path)) else None
    law = load_law(law) if isinstance(law, (str, Path)) else check_law(law)
    source = law.get("source") or source or "fitted"
    n = _positive(student_params)
    si = law["size_unit"] != AS_GIVEN
    linear = law["slope"] * n + law["intercept"]
    ratio = law["ratio"] * n
    rec = Recommendation(
        student_params=n, teacher_linear=linear, teacher_linear_ci=_linear_ci(law, n),
        teacher_ratio=ratio,
        teacher_ratio_ci=[c * n for c in law["ratio_ci"]] if law["ratio_ci"] else None,
        target=linear if linear > 0 else ratio, basis="linear" if linear > 0 else "ratio",
        extrapolation=_extrapolation(law["size_range"], n), size_unit=law["size_unit"],
        ci_level=float(law.get("ci_level", 0.95)), source=source)
    if linear <= 0:
        rec.warnings.append(f"the linear law gives T* = {format_size(linear, si)} <= 0 here; "
                            "ranking uses the proportional law")
    if rec.extrapolation is not None:
        rec.warnings.append(_extrapolation_warning(rec.extrapolation, law["size_range"], n,
                                                   law["size_unit"], "fitted"))
    if teachers:
        rec.ranking = rank_teachers(teachers, rec.target)
    return rec


def rank_teachers(teachers: Sequence[float], target: float) -> list[tuple[float, float]]:
    """Candidates sorted by distance in log-size |ln(T / target)|, closest first."""
    ts = _sizes(teachers)
    return sorted(((t, abs(math.log(t / target))) for t in ts), key=lambda p: (p[1], p[0]))


def _linear_ci(law: Mapping[str, Any], n: float) -> list[float] | None:
    """Percentile interval of a·N + b over the stored joint bootstrap replicates."""
    boot = law.get("bootstrap") or {}
    slope, intercept = boot.get("slope"), boot.get("intercept")
    if not slope or not intercept or len(slope) != len(intercept):
        return None
    values = np.asarray(slope) * n + np.asarray(intercept)
    return percentile_ci(values, float(law.get("ci_level", 0.95)))


def _extrapolation(size_range: Sequence[float], n: float) -> float | None:
    """How many times outside [smallest, largest] fitted student size N is; None inside."""
    lo, hi = size_range
    if n > hi * (1 + 1e-9):
        return n / hi
    if n < lo * (1 - 1e-9):
        return lo / n
    return None


def _positive(student_params: float) -> float:
    n = float(student_params)
    if not math.isfinite(n) or n <= 0:
        raise CapgapError(f"student size must be a positive number, got {student_params}")
    return n


def _sizes(teachers: Sequence[float]) -> list[float]:
    ts = [float(t) for t in teachers]
    if any(not math.isfinite(t) or t <= 0 for t in ts):
        raise CapgapError(f"teacher sizes must be positive numbers, got {teachers}")
    return ts


def _reason(law: Mapping[str, Any]) -> str:
    """Why a law.json holds no law, its reason's first clause (else its status)."""
    return (law.get("reason") or str(law.get("status"))).split(": ")[0]


def _extrapolation_warning(factor: float, size_range: Sequence[float], n: float,
                           size_unit: str | None, what: str) -> str:
    """``extrapolating: N is 4x above the largest (2M) fitted student size``."""
    lo, hi = size_range
    si = size_unit != AS_GIVEN
    side = (f"above the largest ({format_size(hi, si)})" if n > hi else
            f"below the smallest ({format_size(lo, si)})")
    return f"extrapolating: N is {factor:.3g}x {side} {what} student size"
