"""The budget-aware law: student loss as a function of size, tokens and the teacher's loss.

Busbridge et al., *Distillation Scaling Laws* (arXiv 2502.08606), in two parts:

* supervised (no teacher), Hoffmann et al.'s form
  ``Lsup(N, D) = E + (A / N**alpha + B / D**beta) ** gamma``;
* distilled, for a teacher of cross-entropy ``L_T``
  ``L_S = L_T + L_T**(-c0) * (1 + (L_T / (d1 * Lsup)) ** (1 / f1)) ** (-c1 * f1)
  * (A / N**alpha + B / D**beta) ** gamma``
  (their Eq. 8). The middle factor is a broken power law in ``L_T / Lsup``: a teacher far
  better than what the student reaches alone stops helping, then hurts.

Their students start from scratch. capgap's students are pruned from their teacher, and the
no-teacher baseline of a student cut from a bigger teacher is worse at the same size and
budget (more of what the teacher knew is cut away, and healing it takes tokens). Where the
cells hold pruned students of several compression ratios ``r = P_source / N`` (the params of
the model it was cut from over its own), the baseline gets a pruning-damage term that vanishes
for an unpruned student and fades with the budget,
``Lbase(N, D, r) = Lsup(N, D) + K * ln(r)**kappa * D**(-eta)``,
and ``Lbase`` stands in for ``Lsup`` in Eq. 8 (the distilled student's excess over its
teacher scales with the excess of the same initialisation trained alone). Scratch students
(``r = None``) and a law fitted without pruned cells reduce to the paper's form exactly.

The supervised (and damage) constants are fitted on CE-only cells (alpha = 1), then
``c0, c1, d1, f1`` on the distilled cells with those held fixed, as the paper does. Fits are robust least squares
(soft-L1) over several starts; bootstrap over cells gives intervals for every constant and
prediction. ``T*(N, D)`` is the argmin of ``L_S`` over the teachers a user has (their losses).
numpy/scipy only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import least_squares

from capgap.errors import CapgapError

SUP_NAMES = ("E", "A", "alpha", "B", "beta", "gamma")
DAMAGE_NAMES = ("K", "kappa", "eta")
KD_NAMES = ("c0", "c1", "d1", "f1")
FORMAT = "capgap-budget-law/2"
FORMATS = ("capgap-budget-law/1", FORMAT)  # /1: no pruning-damage term


def _sup_term(n: np.ndarray, d: np.ndarray, s: Mapping[str, float]) -> np.ndarray:
    """``(A / N**alpha + B / D**beta) ** gamma`` computed in logs (no overflow)."""
    la = math.log(s["A"]) - s["alpha"] * np.log(n)
    lb = math.log(s["B"]) - s["beta"] * np.log(d)
    return np.exp(s["gamma"] * np.logaddexp(la, lb))


def supervised_loss(n: Any, d: Any, s: Mapping[str, float]) -> np.ndarray:
    """``Lsup(N, D)`` of the supervised constants ``s``."""
    n, d = np.asarray(n, float), np.asarray(d, float)
    return s["E"] + _sup_term(n, d, s)


def baseline_loss(n: Any, d: Any, s: Mapping[str, float], ratio: Any = None) -> np.ndarray:
    """``Lbase(N, D, r)``: ``Lsup`` plus the pruning damage of a student cut ``ratio`` times
    smaller than its source (``s`` holds ``K, kappa, eta``); ``ratio`` None or NaN: none."""
    base = supervised_loss(n, d, s)
    if ratio is None or "K" not in s:
        return base
    r = np.asarray(ratio, float)
    lr = np.log(np.where(np.isfinite(r) & (r > 1), r, 1.0))
    return base + s["K"] * lr ** s["kappa"] * np.asarray(d, float) ** (-s["eta"])


def student_loss(n: Any, d: Any, teacher_loss: Any, s: Mapping[str, float],
                 k: Mapping[str, float], ratio: Any = None) -> np.ndarray:
    """``L_S(N, D, L_T)`` (module docstring) of constants ``s`` (supervised, damage) and ``k``
    (KD), for a student pruned ``ratio`` times smaller than its source (None: scratch)."""
    n, d, lt = (np.asarray(x, float) for x in (n, d, teacher_loss))
    base = baseline_loss(n, d, s, ratio)
    broken = np.exp(-k["c1"] * k["f1"] * np.log1p((lt / (k["d1"] * base)) ** (1 / k["f1"])))
    return lt + lt ** (-k["c0"]) * broken * (base - s["E"])


@dataclass
class BudgetLaw:
    """Fitted constants (point estimates), their intervals and how well they fit."""

    supervised: dict[str, float]
    """``E, A, alpha, B, beta, gamma``, and ``K, kappa, eta`` when fitted with pruning damage."""
    distilled: dict[str, float]
    ci: dict[str, list[float]] = field(default_factory=dict)
    fit: dict[str, Any] = field(default_factory=dict)
    teachers: dict[str, float] = field(default_factory=dict)  # name -> L_T seen in the fit
    boot: list[tuple[dict[str, float], dict[str, float]]] = field(default_factory=list, repr=False)
    teacher_params: dict[str, float] = field(default_factory=dict)  # name -> params, when known

    @property
    def damage(self) -> bool:
        """Whether the law has the pruning-damage term (fitted on pruned students)."""
        return "K" in self.supervised

    def loss(self, n: Any, d: Any, teacher_loss: Any | None = None, ratio: Any = None) -> np.ndarray:
        """Predicted student loss; ``teacher_loss=None`` is the no-teacher baseline; ``ratio``
        the student's compression from the model it was pruned from (None: scratch)."""
        if teacher_loss is None:
            return baseline_loss(n, d, self.supervised, ratio)
        return student_loss(n, d, teacher_loss, self.supervised, self.distilled, ratio)

    def best_teacher(self, n: float, d: float, teachers: Mapping[str, float] | None = None,
                     ci: float = 0.95, params: Mapping[str, float] | None = None,
                     init: str = "pruned") -> dict[str, Any]:
        """``T*(N, D)``: the teacher (name -> its loss) with the lowest predicted student loss.

        With the damage term and ``init="pruned"`` each student is cut from its own teacher,
        so each teacher's size (``params``, default the sizes seen in the fit) sets the
        damage; teachers not larger than the student are left out. ``init="scratch"`` is the
        paper's setting. With bootstrap fits, also how often each teacher is the argmin
        across resamples and the interval of each predicted loss; ``baseline`` is the
        no-teacher prediction of an unpruned student, ``baselines`` that of each pruned init."""
        if init not in ("pruned", "scratch"):
            raise CapgapError(f"init must be pruned or scratch, got {init!r}")
        teachers = dict(teachers or self.teachers)
        if not teachers:
            raise CapgapError("no teachers to choose from: give their losses (NAME=LOSS)")
        ratio, skipped = None, []
        sizes = dict(self.teacher_params) | dict(params or {})
        if self.damage and init == "pruned":
            missing = [t for t in teachers if t not in sizes]
            if missing:
                raise CapgapError(f"the law has a pruning-damage term: give the size of teacher "
                                  f"{missing[0]} (NAME=LOSS@PARAMS), or predict for --init scratch")
            skipped = [t for t in teachers if sizes[t] <= n]
            teachers = {t: v for t, v in teachers.items() if sizes[t] > n}
            if not teachers:
                raise CapgapError(f"no teacher is larger than a {n:.4g}-parameter student to "
                                  "prune it from; predict for --init scratch")
            ratio = np.array([sizes[t] / n for t in teachers])
        names = list(teachers)
        lt = np.array([teachers[t] for t in names])
        pred = self.loss(n, d, lt, ratio)
        out: dict[str, Any] = {
            "student_params": n, "tokens": d, "init": init if self.damage else "any",
            "best": names[int(np.argmin(pred))],
            "losses": dict(zip(names, pred.round(5).tolist(), strict=True)),
            "baseline": round(float(self.loss(n, d)), 5),
        }
        known = {t: float(sizes[t]) for t in names if t in sizes}
        if known:
            out["teacher_params"] = known
        if ratio is not None:
            out["baselines"] = dict(zip(names, self.loss(n, d, None, ratio).round(5).tolist(),
                                        strict=True))
        if skipped:
            out["skipped"] = skipped
        if self.boot:
            draws = np.array([student_loss(n, d, lt, s, k, ratio) for s, k in self.boot])  # [B, T]
            wins = np.bincount(np.nanargmin(draws, axis=1), minlength=len(names)) / len(draws)
            q = [(1 - ci) / 2, (1 + ci) / 2]
            out["best_share"] = dict(zip(names, wins.round(3).tolist(), strict=True))
            out["loss_ci"] = {t: np.nanquantile(draws[:, i], q).round(5).tolist()
                              for i, t in enumerate(names)}
        return out

    def to_dict(self) -> dict[str, Any]:
        form = "Busbridge et al. 2025, Eq. 8 (arXiv 2502.08606)"
        if self.damage:
            form += "; Lsup -> Lbase = Lsup + K ln(r)^kappa D^-eta for students pruned r-fold"
        return {"format": FORMAT, "form": form,
                "supervised": self.supervised, "distilled": self.distilled, "ci": self.ci,
                "fit": self.fit, "teachers": self.teachers, "teacher_params": self.teacher_params,
                "bootstrap": [{"supervised": s, "distilled": k} for s, k in self.boot]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> BudgetLaw:
        if data.get("format") not in FORMATS:
            raise CapgapError(f"not a budget law (format {data.get('format')!r}, want {FORMAT})")
        try:
            boot = [(b["supervised"], b["distilled"]) for b in data.get("bootstrap", [])]
            return cls(dict(data["supervised"]), dict(data["distilled"]), dict(data.get("ci", {})),
                       dict(data.get("fit", {})), dict(data.get("teachers", {})), boot,
                       dict(data.get("teacher_params", {})))
        except (KeyError, TypeError, ValueError) as e:
            raise CapgapError(f"a budget law without its constants ({e!r} missing or malformed)") \
                from None


# ---------------------------------------------------------------------------------------
# Fitting


@dataclass(frozen=True)
class Row:
    """One trained student: size, tokens, its loss and its teacher's (None: no teacher), and
    its compression from the model it was pruned from (None: not pruned)."""

    n: float
    d: float
    loss: float
    teacher_loss: float | None = None
    teacher: str | None = None
    ratio: float | None = None
    teacher_params: float | None = None


def is_baseline(record: Mapping[str, Any]) -> bool:
    """A no-teacher cell (alpha = 1: plain cross-entropy); a missing alpha means distilled."""
    alpha = record.get("alpha")
    return alpha is not None and float(alpha) >= 1.0


def teacher_sizes(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Teacher name -> parameters from the cells that carry ``teacher_params``; one name with
    two sizes (two families' P3 pooled) is refused, since every ratio would be ambiguous."""
    return _per_teacher(records, "teacher_params", lambda name, a, b: (
        f"cells name two different teachers {name} ({a:,.0f} and {b:,.0f} params)"))


def measured_losses(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Teacher name -> the held-out loss the sweep measured on its students' eval text (the
    ``teacher_loss`` column); a name with two values (two families pooled) is refused."""
    return _per_teacher(records, "teacher_loss", lambda name, a, b: (
        f"cells measured teacher {name} at two losses ({a:.4f} and {b:.4f})"))


def _per_teacher(records: Iterable[Mapping[str, Any]], column: str,
                 clash: Callable[[str, float, float], str]) -> dict[str, float]:
    """Teacher name -> the one value of ``column`` its cells carry; two values are an error."""
    out: dict[str, float] = {}
    for r in records:
        name, value = r.get("teacher"), r.get(column)
        if not name or value is None:
            continue
        if out.setdefault(str(name), float(value)) != float(value):
            raise CapgapError(clash(str(name), out[str(name)], float(value))
                              + ": fit one teacher family at a time")
    return out


def rows_from(records: Iterable[Mapping[str, Any]], teacher_losses: Mapping[str, float] | None = None,
              sizes: Mapping[str, float] | None = None) -> list[Row]:
    """Rows from cell dicts: ``student_params``, ``tokens``, ``val_loss``, ``alpha`` and the
    teacher's loss as ``teacher_loss`` or through ``teacher_losses[teacher]``. Where cells
    carry ``teacher_params`` (a sweep's store does), a pruned student's compression is its
    source's size (``pruned_from``, else its teacher) over its own. Cells not ``done`` are
    skipped; a distilled cell whose teacher has no loss is an error. ``teacher_losses`` wins
    over a cell's own ``teacher_loss`` (see :func:`measured_losses`). ``sizes`` (teacher name ->
    parameters) defaults to :func:`teacher_sizes` of ``records``."""
    records = [r for r in records
               if r.get("status", "done") == "done" and r.get("val_loss") is not None]
    sizes = teacher_sizes(records) if sizes is None else sizes
    out = []
    for r in records:
        n, d, loss = float(r["student_params"]), float(r["tokens"]), float(r["val_loss"])
        ratio = None
        if r.get("init", "pruned") == "pruned":
            source = sizes.get(str(r.get("pruned_from") or r.get("teacher")))
            ratio = source / n if source else None
        if is_baseline(r):
            out.append(Row(n, d, loss, ratio=ratio))
            continue
        name = r.get("teacher")
        lt = (teacher_losses or {}).get(str(name))
        if lt is None:
            lt = r.get("teacher_loss")
        if lt is None:
            raise CapgapError(f"no loss for teacher {name!r}: give it as --teacher-loss {name}=LOSS")
        out.append(Row(n, d, loss, float(lt), None if name is None else str(name), ratio,
                       sizes.get(str(name))))
    return out


def _unpack_sup(x: np.ndarray) -> dict[str, float]:
    s = {"E": float(np.exp(x[0])), "A": float(np.exp(x[1])), "alpha": float(x[2]),
         "B": float(np.exp(x[3])), "beta": float(x[4]), "gamma": float(x[5])}
    if len(x) > len(SUP_NAMES):
        s |= {"K": float(np.exp(x[6])), "kappa": float(x[7]), "eta": float(x[8])}
    return s


def _pack_sup(s: Mapping[str, float]) -> list[float]:
    x = [math.log(s["E"]), math.log(s["A"]), s["alpha"], math.log(s["B"]), s["beta"], s["gamma"]]
    return x + ([math.log(s["K"]), s["kappa"], s["eta"]] if "K" in s else [])


def _unpack_kd(x: np.ndarray) -> dict[str, float]:
    return {"c0": float(x[0]), "c1": float(x[1]), "d1": float(np.exp(x[2])), "f1": float(np.exp(x[3]))}


def _pack_kd(k: Mapping[str, float]) -> list[float]:
    return [k["c0"], k["c1"], math.log(k["d1"]), math.log(k["f1"])]


def _best_of(residual, starts: Iterable[Sequence[float]], lower: Sequence[float],
             upper: Sequence[float]) -> tuple[np.ndarray, float]:
    best, cost = None, math.inf
    for x0 in starts:
        x0 = np.clip(np.asarray(x0, float), lower, upper)
        try:
            r = least_squares(residual, x0, bounds=(lower, upper), loss="soft_l1",
                              f_scale=0.01, max_nfev=2000)
        except (ValueError, FloatingPointError):
            continue
        if np.isfinite(r.cost) and r.cost < cost:
            best, cost = r.x, float(r.cost)
    if best is None:
        raise CapgapError("the budget law did not converge from any start")
    return best, cost


def _ratios(rows: Sequence[Row]) -> np.ndarray:
    """Each row's compression ratio, NaN where it was not pruned."""
    return np.array([math.nan if r.ratio is None else r.ratio for r in rows], float)


def has_damage(rows: Sequence[Row]) -> bool:
    """Whether the CE-only rows span enough compression ratios (>= 3) to fit the damage."""
    ratios = {round(math.log(r.ratio), 2) for r in rows
              if r.teacher_loss is None and r.ratio is not None and r.ratio > 1}
    return len(ratios) >= 3


def fit_supervised(rows: Sequence[Row], damage: bool | None = None,
                   start: Mapping[str, float] | None = None) -> dict[str, float]:
    """The supervised constants from CE-only rows (needs >= 2 sizes and >= 2 budgets), with
    the pruning-damage term when ``damage`` (default: :func:`has_damage`); ``start`` replaces
    the grid of starting points (a bootstrap refit starts from the point estimate)."""
    base = [r for r in rows if r.teacher_loss is None]
    n, d, y = (np.array([getattr(r, a) for r in base], float) for a in ("n", "d", "loss"))
    damage = has_damage(rows) if damage is None else damage
    need = len(SUP_NAMES) + (len(DAMAGE_NAMES) if damage else 0)
    if len(set(n.round(-2))) < 2 or len(set(d)) < 2 or len(base) < need:
        raise CapgapError(f"the supervised law needs CE-only cells at >= 2 student sizes and >= 2 "
                          f"budgets, at least {need} cells (got {len(base)})")
    ratio = _ratios(base) if damage else None
    floor = float(y.min())

    def residual(x: np.ndarray) -> np.ndarray:
        return baseline_loss(n, d, _unpack_sup(x), ratio) - y

    grid = [[math.log(floor * e), math.log(a), al, math.log(b), be, 1.0]
            for e, a, al, b, be in itertools.product((0.5, 0.9), (1e2, 1e4), (0.3, 0.6),
                                                      (1e2, 1e4), (0.3, 0.6))]
    lower = [math.log(1e-3), math.log(1e-6), 0.01, math.log(1e-6), 0.01, 0.1]
    upper = [math.log(floor), math.log(1e12), 2.0, math.log(1e12), 2.0, 3.0]
    if damage:
        grid = [g + [math.log(k), 1.0, eta] for g in grid for k, eta in ((1.0, 0.1), (30.0, 0.3))]
        lower += [math.log(1e-6), 0.1, 0.0]
        upper += [math.log(1e6), 4.0, 2.0]
    x, _ = _best_of(residual, [_pack_sup(start)] if start else grid, lower, upper)
    return _unpack_sup(x)


def fit_distilled(rows: Sequence[Row], sup: Mapping[str, float],
                  start: Mapping[str, float] | None = None) -> dict[str, float]:
    """``c0, c1, d1, f1`` from distilled rows, the supervised constants held fixed."""
    kd = [r for r in rows if r.teacher_loss is not None]
    if len(kd) < len(KD_NAMES) + 1:
        raise CapgapError(f"the distillation law needs at least {len(KD_NAMES) + 1} distilled cells "
                          f"(got {len(kd)})")
    n, d, lt, y = (np.array([getattr(r, a) for r in kd], float)
                   for a in ("n", "d", "teacher_loss", "loss"))
    ratio = _ratios(kd) if "K" in sup else None

    def residual(x: np.ndarray) -> np.ndarray:
        return student_loss(n, d, lt, sup, _unpack_kd(x), ratio) - y

    grid = [[c0, c1, math.log(d1), math.log(f1)]
            for c0, c1, d1, f1 in itertools.product((0.0, 1.0), (0.5, 2.0, 8.0), (0.5, 1.0, 2.0),
                                                      (0.1, 0.3, 1.0))]
    x, _ = _best_of(residual, [_pack_kd(start)] if start else grid,
                    [-3.0, 0.0, math.log(0.05), math.log(0.05)],
                    [5.0, 10.0, math.log(20.0), math.log(20.0)])
    return _unpack_kd(x)


def fit_budget_law(rows: Sequence[Row], bootstrap: int = 200, ci: float = 0.95,
                   seed: int = 0, damage: bool | None = None) -> BudgetLaw:
    """Fit both parts, then ``bootstrap`` refits on cells resampled with replacement, each
    started from the point estimate. ``damage``: fit the pruning-damage term (default: when
    the CE-only cells span >= 3 compression ratios)."""
    damage = has_damage(rows) if damage is None else damage
    sup = fit_supervised(rows, damage)
    kd = fit_distilled(rows, sup)
    law = BudgetLaw(sup, kd, teachers=_teachers(rows),
                    teacher_params={r.teacher: r.teacher_params for r in rows
                                    if r.teacher and r.teacher_params})
    resid = np.array([float(law.loss(r.n, r.d, r.teacher_loss, r.ratio)) - r.loss for r in rows])
    law.fit = {"cells": len(rows), "baseline_cells": sum(r.teacher_loss is None for r in rows),
               "rmse_nats": float(np.sqrt(np.mean(resid**2))),
               "max_abs_nats": float(np.abs(resid).max()),
               "damage": damage, "at_bounds": _at_bounds(sup, kd)}
    rng = np.random.default_rng(seed)
    for _ in range(bootstrap):
        sample = [rows[i] for i in rng.integers(0, len(rows), len(rows))]
        try:
            s = fit_supervised(sample, damage, start=sup)
            law.boot.append((s, fit_distilled(sample, s, start=kd)))
        except CapgapError:  # a resample without enough sizes or budgets: skipped, counted
            continue
    law.fit["bootstrap"] = {"asked": bootstrap, "fitted": len(law.boot)}
    if law.boot:
        q = [(1 - ci) / 2, (1 + ci) / 2]
        for name in SUP_NAMES + (DAMAGE_NAMES if damage else ()):
            law.ci[name] = np.quantile([s[name] for s, _ in law.boot], q).tolist()
        for name in KD_NAMES:
            law.ci[name] = np.quantile([k[name] for _, k in law.boot], q).tolist()
        law.ci["level"] = [ci, ci]
    return law


def _teachers(rows: Sequence[Row]) -> dict[str, float]:
    return {r.teacher or f"L_T={r.teacher_loss:.4f}": r.teacher_loss for r in rows
            if r.teacher_loss is not None}


def _at_bounds(sup: Mapping[str, float], kd: Mapping[str, float]) -> list[str]:
    """Constants pinned at a search bound: what the data do not determine."""
    edges = {"alpha": (0.01, 2.0), "beta": (0.01, 2.0), "gamma": (0.1, 3.0), "kappa": (0.1, 4.0),
             "eta": (0.0, 2.0), "c0": (-3.0, 5.0), "c1": (0.0, 10.0), "d1": (0.05, 20.0),
             "f1": (0.05, 20.0)}
    values = dict(sup) | dict(kd)
    return [k for k, (lo, hi) in edges.items()
            if k in values and min(abs(values[k] - lo), abs(values[k] - hi)) < 1e-3 * (hi - lo)]
