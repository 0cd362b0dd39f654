"""Fit the capacity-gap law T* = a·S + b (and T* = k·S) from sweep cells or optimal points.

:func:`fit_source` loads, selects and fits in one call; :func:`fit_law` fits cells,
:func:`fit_points` fits already-optimal (S, T*) pairs. Each returns the JSON-ready law
dict whose schema is in ``capgap/law/README.md``. A law needs >= 3 uncensored student sizes;
with fewer the dict has ``status: "insufficient"`` and a ``reason``, and no fitted numbers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from capgap import __version__
from capgap.errors import CapgapError
from capgap.law.bootstrap import (
    Replicates,
    bootstrap_law,
    has_seeds,
    percentile_ci,
    resolve_method,
    seed_replicates,
)
from capgap.law.bracket import ratio_bracket
from capgap.law.cells import (
    AS_GIVEN,
    SIZE_TOLERANCE,
    SIZE_UNITS,
    Cell,
    Point,
    cells_from_table,
    default_metric,
    filter_table,
    group_by_size,
    looks_like_points,
    points_from_table,
    read_table,
    select_cells,
)
from capgap.law.fit import fit_linear, fit_ratio, leave_one_out
from capgap.law.optimum import (
    OPTIMA,
    Optimum,
    SizeCurve,
    build_curve,
    check_duplicates,
    find_optimum,
)
from capgap.results.defaults import LAW_BOOTSTRAP, LAW_CI, NOISE_FLOOR, PAPER_RATIO

MIN_SIZES = 3
R2_DEFINITION = ("1 - SS_res/SS_tot with SS_tot centred on the mean T*, for both fits "
                 "(so ratio_r2 is comparable with r2 and can be negative)")


def fit_source(source: str | Path | Sequence[Any], *, where: Mapping[str, Any] | None = None,
               metric: str | None = None, higher_is_better: bool = False, size: str = "total",
               optimum: str = "argmin", n_boot: int = LAW_BOOTSTRAP, ci: float = LAW_CI,
               ci_method: str = "auto", seed: int = 0,
               tie_floor: float = NOISE_FLOOR) -> dict[str, Any]:
    """Load ``source`` (cells CSV/JSONL, sweep folder, points CSV, list of dicts or of
    :class:`Cell`) and fit it; points files go to :func:`fit_points`."""
    if isinstance(source, list) and source and all(isinstance(c, Cell) for c in source):
        cells, name, kind = source, "<list>", "list"
    else:
        table = read_table(source)
        name, kind = table.name, table.kind
        if looks_like_points(table, metric):
            points = points_from_table(filter_table(table, where), size=size)
            law = fit_points(points, n_boot=n_boot, ci=ci, seed=seed)
            law["selection"] |= {"source": name, "source_kind": kind, "size": size,
                                 "where": {str(k): str(v) for k, v in (where or {}).items()}}
            return law
        metric = metric or default_metric(table)
        cells = cells_from_table(table, metric=metric, size=size)
    law = fit_law(cells, where=where, metric=metric or "metric",
                  higher_is_better=higher_is_better, optimum=optimum, n_boot=n_boot, ci=ci,
                  ci_method=ci_method, seed=seed, size_unit=SIZE_UNITS[size],
                  tie_floor=tie_floor)
    law["selection"] |= {"source": name, "source_kind": kind, "size": size}
    return law


def fit_law(cells: Sequence[Cell], *, where: Mapping[str, Any] | None = None,
            metric: str = "metric", higher_is_better: bool = False, optimum: str = "argmin",
            n_boot: int = LAW_BOOTSTRAP, ci: float = LAW_CI, ci_method: str = "auto",
            seed: int = 0, size_unit: str = SIZE_UNITS["total"],
            tie_floor: float = NOISE_FLOOR) -> dict[str, Any]:
    """Fit the law on sweep cells (selected here: see :func:`~capgap.law.cells.select_cells`).

    ``optimum`` picks which per-size best teacher is fitted: ``"argmin"`` (default; the
    paper's choice, quantised to the teachers run) or ``"quadratic"`` (the vertex; sizes
    without one are left out). ``bracket`` bounds T*/S from every size, censored or not
    (:mod:`capgap.law.bracket`); ``tie_floor`` is its smallest noise in metric units.
    """
    _check_options(optimum, n_boot, ci)
    if not tie_floor >= 0 or not np.isfinite(tie_floor):
        raise CapgapError(f"--tie-floor must be a finite number >= 0, got {tie_floor}")
    sign = -1.0 if higher_is_better else 1.0
    kept, selection = select_cells(list(cells), where)
    curves = _curves(kept)
    optima = [find_optimum(c, sign) for c in curves]
    chosen = [o.argmin if optimum == "argmin" else o.continuous for o in optima]
    used = [i for i, (o, t) in enumerate(zip(optima, chosen, strict=True))
            if not o.censored and t is not None]
    method = resolve_method(ci_method, [curves[i] for i in used])
    rng = np.random.default_rng(seed)
    width = max(len(used), 1)
    reps = [seed_replicates(c, sign, optimum, (n_boot, width), rng) if has_seeds(c) else None
            for c in curves]

    s = np.array([curves[i].student_params for i in used])
    t = np.array([chosen[i] for i in used], dtype=float)
    seed_reps = np.stack([reps[i] for i in used]) if "seeds" in method and used else None
    law = _law_block(s, t, seed_reps, method, n_boot, ci, seed, rng)
    law["sizes"] = [_size_entry(c, o, tc, i in used, r, ci)
                    for i, (c, o, tc, r) in enumerate(zip(curves, optima, chosen, reps,
                                                          strict=True))]
    law["bracket"] = ratio_bracket(curves, sign, tie_floor, reference=PAPER_RATIO)
    law["warnings"] = _cell_warnings(curves, optima, chosen, used) + law["warnings"]
    law |= {"optimum": optimum, "size_unit": size_unit, "tie_floor": tie_floor,
            "metric": {"name": metric, "higher_is_better": higher_is_better},
            "selection": selection.to_dict()}
    if law["status"] == "insufficient":
        law["reason"] = _insufficient_reason(len(used), optima, chosen)
    return _ordered(law)


def fit_points(points: Sequence[Point | tuple[float, float]], *, n_boot: int = 2000,
               ci: float = 0.95, seed: int = 0, size_unit: str = AS_GIVEN) -> dict[str, Any]:
    """Fit the law on already-optimal (S, T*) pairs; ``censored`` points are left out.

    There is no seed information, so intervals come from resampling the points.
    """
    _check_options("argmin", n_boot, ci)
    pts = [p if isinstance(p, Point) else Point(float(p[0]), float(p[1])) for p in points]
    used = [p for p in pts if not p.censored]
    s = np.array([p.student_params for p in used])
    t = np.array([p.teacher_params for p in used])
    rng = np.random.default_rng(seed)
    law = _law_block(s, t, None, resolve_method("auto", None), n_boot, ci, seed, rng)
    law["sizes"] = [{"student_params": p.student_params, "optimum": p.teacher_params,
                     "censored": p.censored, "used_in_fit": not p.censored, "origin": p.origin}
                    for p in pts]
    law |= {"optimum": "given", "size_unit": size_unit,
            "metric": None, "selection": {"n_rows": len(pts), "n_used": len(used)}}
    if law["status"] == "insufficient":
        law["reason"] = (f"{len(used)} uncensored point(s) at {np.unique(s).size} distinct "
                         f"student size(s); a law needs >= {MIN_SIZES}: "
                         f"{why_sizes(int(np.unique(s).size))}")
    return _ordered(law)


def _curves(cells: list[Cell]) -> list[SizeCurve]:
    """One metric-vs-teacher curve per student size, smallest student first."""
    groups = group_by_size(cells)
    for g in groups:
        check_duplicates(g)
    return [build_curve(g) for g in groups]


# ---------------------------------------------------------------- shared fitting block


def _law_block(s: np.ndarray, t: np.ndarray, seed_reps: np.ndarray | None, method: str,
               n_boot: int, ci: float, seed: int, rng: np.random.Generator) -> dict[str, Any]:
    """Both fits, their bootstrap intervals and LOO on the points (s, t); or "insufficient"."""
    order = np.argsort(s, kind="stable")
    s, t = s[order], t[order]
    seed_reps = seed_reps[order] if seed_reps is not None else None
    law: dict[str, Any] = {
        "status": "insufficient", "reason": None, "n_points": int(s.size),
        "points": [[float(a), float(b)] for a, b in zip(s, t, strict=True)],
        "size_range": [float(s.min()), float(s.max())] if s.size else None,
        "ci_level": ci, "ci_method": method, "n_boot": n_boot, "boot_seed": seed,
        "warnings": [],
    }
    law |= dict.fromkeys(("slope", "intercept", "r2", "ratio", "ratio_r2", "slope_ci",
                          "intercept_ci", "ratio_ci", "n_boot_valid", "loo", "bootstrap"))
    if np.unique(s).size < MIN_SIZES:
        return law
    line, prop = fit_linear(s, t), fit_ratio(s, t)
    boot = bootstrap_law(s, t, seed_reps, "sizes" in method, n_boot, rng)
    law |= {
        "status": "ok", "slope": line.slope, "intercept": line.intercept, "r2": line.r2,
        "ratio": prop.ratio, "ratio_r2": prop.r2, "r2_definition": R2_DEFINITION,
        "slope_ci": percentile_ci(boot.slope, ci),
        "intercept_ci": percentile_ci(boot.intercept, ci),
        "ratio_ci": percentile_ci(boot.ratio, ci),
        "n_boot_valid": int(boot.valid.sum()),
        "loo": leave_one_out(s, t),
        "bootstrap": _replicates_json(boot),
    }
    law["warnings"] = _fit_warnings(law)
    return law


def _replicates_json(boot: Replicates) -> dict[str, list[float]]:
    """Valid replicates (7 significant digits), kept so predictions get joint intervals."""
    ok = boot.valid
    return {k: [float(f"{x:.7g}") for x in getattr(boot, k)[ok]]
            for k in ("slope", "intercept", "ratio")}


def _size_entry(curve: SizeCurve, opt: Optimum, chosen: float | None, used: bool,
                reps: np.ndarray | None, ci: float) -> dict[str, Any]:
    """Everything about one student size that a reader needs to check its optimum."""
    return {
        "label": curve.label,
        "student_params": curve.student_params,
        "student_params_range": list(curve.student_range),
        "teachers": curve.teachers.tolist(),
        "metric_mean": curve.means.tolist(),
        "metric_sd": curve.sds,
        "n_seeds": curve.n_obs,
        "argmin": opt.argmin,
        "continuous_optimum": opt.continuous,
        "continuous_note": opt.continuous_note,
        "optimum": chosen,
        "ratio": chosen / curve.student_params if chosen is not None else None,
        "censored": opt.censored,
        "censored_edge": opt.censored_edge,
        "used_in_fit": used,
        "t_opt_ci": percentile_ci(reps, ci) if reps is not None else None,
        "t_opt_ci_defined": float(np.isfinite(reps).mean()) if reps is not None else None,
    }


# ---------------------------------------------------------------- checks and messages


def _check_options(optimum: str, n_boot: int, ci: float) -> None:
    if optimum not in OPTIMA:
        raise CapgapError(f"unknown optimum {optimum!r} (use one of {', '.join(OPTIMA)})")
    if int(n_boot) < 1:
        raise CapgapError(f"--bootstrap must be >= 1, got {n_boot}")
    if not 0 < ci < 1:
        raise CapgapError(f"--ci must be between 0 and 1 (e.g. 0.95), got {ci}")


def _insufficient_reason(n_used: int, optima: list[Optimum], chosen: list[float | None]) -> str:
    n_cens = sum(o.censored for o in optima)
    n_none = sum(t is None and not o.censored for o, t in zip(optima, chosen, strict=True))
    parts = [f"{len(optima)} student size(s)", f"{n_cens} censored at the edge of the teacher "
             "range"]
    if n_none:
        parts.append(f"{n_none} without a continuous optimum")
    return (f"{n_used} uncensored student size(s), a law needs >= {MIN_SIZES} "
            f"({', '.join(parts)}): {why_sizes(n_used)}")


def why_sizes(n: int) -> str:
    """Why fewer than MIN_SIZES student sizes give no law (said, not printed as R² = 1)."""
    if n == 0:
        return ("every optimum is at the edge of the teacher range, where the best teacher "
                "may lie beyond it; add teachers past the edge or train longer")
    if n == 1:
        return ("one student size cannot fix a line: every line through its optimum fits it "
                "equally well; sweep more student sizes")
    return ("two sizes fix a line exactly, so its fit would be perfect by construction and no "
            "error could be estimated; sweep a third student size")


def _cell_warnings(curves: list[SizeCurve], optima: list[Optimum],
                   chosen: list[float | None], used: list[int]) -> list[str]:
    out = []
    censored = [c for c, o in zip(curves, optima, strict=True) if o.censored]
    if censored:
        out.append(f"{len(censored)} of {len(curves)} sizes censored (best teacher at the edge "
                   "of the teacher range) and left out; widen the teacher range")
    no_opt = [c for c, o, t in zip(curves, optima, chosen, strict=True)
              if t is None and not o.censored]
    if no_opt:
        out.append(f"{len(no_opt)} size(s) have no continuous optimum and are left out")
    for c in curves:
        lo, hi = c.student_range
        if hi > lo * (1 + SIZE_TOLERANCE):
            out.append(f"size {c.label}: student sizes spread {hi / lo - 1:.1%} (> 1 %)")
    return out


def _fit_warnings(law: dict[str, Any]) -> list[str]:
    out = []
    if law["r2"] is None:
        out.append("all best teachers are equal: R² is undefined")
    if law["n_boot_valid"] < 0.9 * law["n_boot"]:
        out.append(f"only {law['n_boot_valid']} of {law['n_boot']} bootstrap replicates had "
                   "an optimum for every size; intervals are less reliable")
    for key in ("slope", "intercept", "ratio"):
        lo_hi = law[f"{key}_ci"]
        if lo_hi is not None and not lo_hi[0] <= law[key] <= lo_hi[1]:
            out.append(f"{key} lies outside its bootstrap interval (a skewed, quantised "
                       "bootstrap distribution); read the interval with care")
    return out


_KEY_ORDER = ("status", "reason", "slope", "intercept", "r2", "ratio", "ratio_r2", "slope_ci",
              "intercept_ci", "ratio_ci", "bracket", "ci_level", "ci_method", "n_boot", "n_boot_valid",
              "boot_seed", "n_points", "points", "size_unit", "size_range", "optimum", "metric",
              "selection", "loo", "sizes", "warnings", "r2_definition")


def _ordered(law: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers first, bulky bootstrap replicates last."""
    out = {k: law[k] for k in _KEY_ORDER if k in law}
    out |= {k: v for k, v in law.items() if k not in out and k != "bootstrap"}
    out["capgap_version"] = __version__
    out["bootstrap"] = law.get("bootstrap")
    return out
