"""The best teacher for one student size, from that size's metric-vs-teacher curve.

Two estimates, reported side by side:

* **argmin** — the teacher with the best mean metric over seeds. Assumption-free but
  quantised to the teachers that were run. Ties go to the smaller teacher.
* **continuous** — the vertex of a quadratic fitted to the per-teacher means against
  ln(teacher_params), when there are >= 3 teachers, the parabola opens towards "better"
  (upwards for a loss) and the vertex lies inside the teacher range; otherwise none.

An argmin at the smallest or largest teacher is **censored**: the true optimum may lie
beyond the range, so the size is left out of the fit.

Teachers are compared on the seeds they all have. Those rules (shared seeds, ties,
censoring) are the results layer's (:mod:`capgap.results.optimum`), which the report and a
study's synthesis apply too.

Everything works on batches of curves (rows = bootstrap replicates) so the point estimate
and the bootstrap share one code path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from capgap.errors import CapgapError
from capgap.law.cells import Cell
from capgap.results.optimum import argmin_index, censored_edge, shared_seeds

OPTIMA = ("argmin", "quadratic")


@dataclass
class SizeCurve:
    """One student size: its teachers (ascending) and the metric observations per teacher."""

    label: str | None
    student_params: float  # mean over teachers of their students' size
    student_range: tuple[float, float]
    teachers: np.ndarray  # (J,)
    values: list[np.ndarray]  # J arrays of observations (one per seed / replicate cell)

    @property
    def means(self) -> np.ndarray:
        return np.array([v.mean() for v in self.values])

    @property
    def sds(self) -> list[float | None]:
        """Sample standard deviation (ddof 1) per teacher; None with a single observation."""
        return [float(v.std(ddof=1)) if v.size > 1 else None for v in self.values]

    @property
    def n_obs(self) -> list[int]:
        return [int(v.size) for v in self.values]


@dataclass
class Optimum:
    """The best teacher of one size and why it may not be usable."""

    argmin: float
    continuous: float | None
    continuous_note: str | None  # why there is no continuous optimum
    censored_edge: str | None  # "low", "high", "both" (single teacher) or None

    @property
    def censored(self) -> bool:
        return self.censored_edge is not None


def build_curve(cells: list[Cell]) -> SizeCurve:
    """Gather one size's cells by teacher size (cells of one teacher are its replicates, on
    the seeds all teachers share). The size is the mean over teachers of each teacher's
    student size, so it does not move with how many seeds a teacher has (in non-embedding
    parameters a size's students differ from teacher to teacher)."""
    cells = shared_seeds(cells, lambda c: c.teacher_params, lambda c: c.seed)
    s = np.array([c.student_params for c in cells])
    by_teacher: dict[float, list[float]] = {}
    sizes: dict[float, list[float]] = {}
    for c in cells:
        by_teacher.setdefault(c.teacher_params, []).append(float(c.metric))  # type: ignore[arg-type]
        sizes.setdefault(c.teacher_params, []).append(c.student_params)
    teachers = np.array(sorted(by_teacher))
    return SizeCurve(
        label=cells[0].group,
        student_params=float(np.mean([np.mean(v) for v in sizes.values()])),
        student_range=(float(s.min()), float(s.max())),
        teachers=teachers,
        values=[np.array(by_teacher[t]) for t in teachers],
    )


def check_duplicates(cells: list[Cell]) -> None:
    """Refuse two cells of one size with the same teacher and seed: the selection mixes
    settings (objective, tokens, ...) that must be separated with ``where``."""
    seen: dict[tuple[float, str], Cell] = {}
    for c in cells:
        if c.seed is None:
            continue
        key = (c.teacher_params, c.seed)
        if key in seen:
            other = seen[key]
            differ = sorted(k for k in set(c.fields) | set(other.fields)
                            if str(c.fields.get(k)) != str(other.fields.get(k)))
            hint = [k for k in differ if k not in ("metric", "val_loss", "status", "id")]
            raise CapgapError(
                f"{other.origin} and {c.origin}: two cells for the same student size, teacher "
                f"and seed {c.seed}; narrow the selection with --where "
                f"(columns that differ: {', '.join(hint[:6] or differ[:6]) or 'none'})")
        seen[key] = c


def find_optimum(curve: SizeCurve, sign: float) -> Optimum:
    """Point estimate for one size; ``sign`` is +1 when lower is better, -1 otherwise."""
    means = sign * curve.means[None, :]  # (1, J)
    j = int(argmin_index(means)[0])
    edge = censored_edge(j, curve.teachers.size)
    vertex, note = quadratic_vertex(curve.teachers, means)
    cont = None if np.isnan(vertex[0]) else float(vertex[0])
    return Optimum(float(curve.teachers[j]), cont, None if cont is not None else note, edge)


def quadratic_vertex(teachers: np.ndarray, loss: np.ndarray) -> tuple[np.ndarray, str]:
    """Vertex T of loss ~ c0 + c1·x + c2·x², x = ln T, per row of ``loss`` (B, J).

    NaN where there are < 3 teachers, the parabola does not open upwards, or the vertex is
    outside [T_min, T_max]. Also returns a note for the single-row case.
    """
    b = loss.shape[0]
    if teachers.size < 3:
        return np.full(b, np.nan), "fewer than 3 teachers"
    x = np.log(teachers)
    centre = x.mean()  # centred for conditioning
    c2, c1, _ = np.polyfit(x - centre, loss.T, 2)  # each (B,)
    with np.errstate(divide="ignore", invalid="ignore"):
        xv = -c1 / (2 * c2) + centre
    ok = (c2 > 0) & (xv >= x[0] - 1e-12) & (xv <= x[-1] + 1e-12)
    out = np.where(ok, np.exp(np.clip(xv, x[0], x[-1])), np.nan)
    note = "parabola does not open towards better values" if c2[0] <= 0 else \
        "vertex outside the teacher range"
    return out, note


def batch_optimum(teachers: np.ndarray, loss: np.ndarray, method: str) -> np.ndarray:
    """Best teacher per row of ``loss`` (B, J) by ``method``; NaN where undefined."""
    if method == "argmin":
        return teachers[argmin_index(loss)]
    if method == "quadratic":
        return quadratic_vertex(teachers, loss)[0]
    raise CapgapError(f"unknown optimum {method!r} (use one of {', '.join(OPTIMA)})")
