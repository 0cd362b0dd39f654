"""Validate the budget-aware law on cells it never saw.

The cells are split by value: every cell whose ``column`` is one of the held-out values (for
any column named, e.g. a larger budget or a student size never fitted) is held out, the law
(:mod:`capgap.law.budget`) is fitted on the rest, and each held-out cell is predicted from
its size, budget, teacher's loss and compression alone. Three figures say how it went:

* ``mae_nats``: mean absolute error of the prediction against each held-out cell's loss
  (the mean over its seeds), distilled cells and baselines alike (each also apart);
* ``seed_noise_nats``: the root-mean-square sample standard deviation over seeds of cells
  with at least ``MIN_SEEDS`` seeds (any cell, fitted or held out): what one cell's loss
  wanders by when only the data order changes, the floor any prediction is read against;
* ``argmin_agreement``: over held-out (student size, budget) slices, the fraction whose
  predicted best teacher (the law's argmin over the teachers measured in that slice) is the
  measured best (:mod:`capgap.results.optimum`'s rule); ``argmin_within_noise`` also counts a
  prediction whose measured loss is within ``SIGNAL`` x seed noise of the best.

numpy only; the caller gives the cells (a sweep's rows or a table) and the teachers' losses.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from capgap.errors import CapgapError
from capgap.law.budget import BudgetLaw, fit_budget_law, is_baseline, rows_from, teacher_sizes
from capgap.results.defaults import SIGNAL
from capgap.results.findings import seed_sd
from capgap.results.optimum import best_index, seed_noise, shared_seeds
from capgap.units import format_size

FORMAT = "capgap-holdout/1"
MIN_SEEDS = 3
CELL_KEY = ("student_target", "teacher", "pruned_from", "init", "objective", "allocation",
            "alpha", "tokens")
SLICE_KEY = ("student_target", "tokens", "objective", "allocation")


def is_held_out(record: Mapping[str, Any], hold_out: Mapping[str, Sequence[Any]]) -> bool:
    """Whether ``record`` matches any held-out value of any column (numbers compared as
    numbers, within 1e-9 relative)."""
    return any(_same(record.get(col), v) for col, values in hold_out.items() for v in values)


def _same(a: Any, b: Any) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    except (TypeError, ValueError):
        return a is not None and str(a) == str(b)


def setting_cells(records: Iterable[Mapping[str, Any]], objective: str | None = None,
                  allocation: str | None = None) -> list[Mapping[str, Any]]:
    """The cells one law models: distilled cells of one objective and allocation, and the
    no-teacher baselines of that allocation (whatever objective they are labelled with). The
    law has no term for either, so cells of several and none named is an error."""
    records = list(records)
    for column, chosen in (("allocation", allocation), ("objective", objective)):
        pool = records if column == "allocation" else [r for r in records if not is_baseline(r)]
        found = sorted({str(r[column]) for r in pool if r.get(column) is not None})
        if chosen is None and len(found) > 1:
            raise CapgapError(f"the cells hold {column}s {', '.join(found)} and the law has no "
                              f"term for them: pick one (--where {column}=X)")
        if chosen is not None:
            records = [r for r in records if r.get(column) in (None, chosen)
                       or (column == "objective" and is_baseline(r))]
    return records


def split(records: Iterable[Mapping[str, Any]], hold_out: Mapping[str, Sequence[Any]]
          ) -> tuple[list[Mapping[str, Any]], list[Mapping[str, Any]]]:
    """(fit, held out) among the finished cells of ``records``. A column no cell has (a
    misspelling) is refused: it would hold out nothing and let those cells into the fit."""
    if not hold_out or not any(hold_out.values()):
        raise CapgapError("hold out something: give a column and its values, e.g. tokens=4e6")
    done = [r for r in records if r.get("status", "done") == "done" and r.get("val_loss") is not None]
    columns = {k for r in done for k, v in r.items() if v is not None}
    missing = sorted(c for c in hold_out if c not in columns)
    if done and missing:
        raise CapgapError(f"no cell has a column {missing[0]!r} to hold out by (columns: "
                          f"{', '.join(sorted(columns))})")
    fit = [r for r in done if not is_held_out(r, hold_out)]
    test = [r for r in done if is_held_out(r, hold_out)]
    if not test:
        raise CapgapError(f"no finished cell matches the held-out values {dict(hold_out)}")
    return fit, test


def holdout(records: Iterable[Mapping[str, Any]], teacher_losses: Mapping[str, float],
            hold_out: Mapping[str, Sequence[Any]], bootstrap: int = 200, seed: int = 0,
            damage: bool | None = None) -> tuple[dict[str, Any], BudgetLaw]:
    """Fit on the cells not held out, predict the held-out ones; the record (module
    docstring) and the law. ``teacher_losses`` maps teacher names to held-out losses."""
    records = setting_cells(records)
    fit, test = split(records, hold_out)
    sizes = teacher_sizes([*fit, *test])  # a held-out control cell's source may be fitted
    fit_rows = rows_from(fit, teacher_losses, sizes)
    law = fit_budget_law(fit_rows, bootstrap=bootstrap, seed=seed, damage=damage)
    cells = _predict_cells(law, test, teacher_losses, sizes)
    slices = _argmin_slices(law, test, teacher_losses, sizes)
    noise, noise_cells = seed_noise_nats(records)
    agree = [s["agree"] for s in slices]
    near = [s["within_noise"] for s in slices]
    err = [abs(c["error_nats"]) for c in cells]
    record = {
        "format": FORMAT, "hold_out": {k: list(v) for k, v in hold_out.items()},
        "fit_cells": len(fit_rows), "held_out_cells": len(test),
        "mae_nats": _mean(err),
        "mae_distilled_nats": _mean([abs(c["error_nats"]) for c in cells if c["teacher_loss"] is not None]),
        "mae_baseline_nats": _mean([abs(c["error_nats"]) for c in cells if c["teacher_loss"] is None]),
        "max_abs_nats": max(err) if err else None,
        "seed_noise_nats": noise, "seed_noise_cells": noise_cells,
        "argmin_agreement": _mean([float(a) for a in agree]),
        "argmin_within_noise": _mean([float(a) for a in near]),
        "slices": slices, "cells": cells,
        "fit": law.fit, "law": {"supervised": law.supervised, "distilled": law.distilled,
                                "ci": law.ci},
    }
    return record, law


def _mean(values: Sequence[float]) -> float | None:
    return float(statistics.fmean(values)) if values else None


def _groups(records: Iterable[Mapping[str, Any]]) -> dict[tuple, list[Mapping[str, Any]]]:
    out: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in records:
        out.setdefault(tuple(r.get(k) for k in CELL_KEY), []).append(r)
    return out


def seed_noise_nats(records: Iterable[Mapping[str, Any]]) -> tuple[float | None, int]:
    """RMS seed sd over finished cells with >= ``MIN_SEEDS`` seeds, and how many there were."""
    done = [r for r in records if r.get("status", "done") == "done" and r.get("val_loss") is not None]
    sds = [sd for g in _groups(done).values()
           if len({r.get("seed") for r in g}) >= MIN_SEEDS
           and (sd := seed_sd([float(r["val_loss"]) for r in g])) is not None]
    return (float(np.sqrt(np.mean(np.square(sds)))) if sds else None), len(sds)


def _predict_cells(law: BudgetLaw, test: list[Mapping[str, Any]], losses: Mapping[str, float],
                   sizes: Mapping[str, float]) -> list[dict[str, Any]]:
    """Each held-out cell (seeds averaged): measured and predicted loss."""
    out = []
    for key, group in sorted(_groups(test).items(), key=lambda kv: str(kv[0])):
        rows = rows_from(group, losses, sizes)
        r0 = rows[0]
        measured = statistics.fmean(r.loss for r in rows)
        pred = float(law.loss(r0.n, r0.d, r0.teacher_loss, r0.ratio))
        out.append(dict(zip(CELL_KEY, key, strict=True)) | {
            "student_params": r0.n, "seeds": len(rows), "teacher_loss": r0.teacher_loss,
            "ratio": r0.ratio, "measured": round(measured, 5), "predicted": round(pred, 5),
            "error_nats": round(pred - measured, 5)})
    return out


def _argmin_slices(law: BudgetLaw, test: list[Mapping[str, Any]], losses: Mapping[str, float],
                   sizes: Mapping[str, float]) -> list[dict[str, Any]]:
    """Per held-out (student size, budget): the measured and the predicted best teacher among
    the own-pruned distilled cells (each student cut from its own teacher)."""
    slices: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in test:
        own = r.get("pruned_from") in (None, r.get("teacher"))
        if not is_baseline(r) and r.get("init", "pruned") == "pruned" and own:
            slices.setdefault(tuple(r.get(k) for k in SLICE_KEY), []).append(r)
    out = []
    for (target, tokens, *_), every in sorted(
            slices.items(), key=lambda kv: (float(kv[0][0] or 0), float(kv[0][1] or 0), str(kv[0]))):
        cells = shared_seeds(every, lambda r: r["teacher"], lambda r: r.get("seed"))
        unsized = sorted({str(r["teacher"]) for r in cells} - set(sizes))
        if unsized:
            raise CapgapError(f"no size for teacher {unsized[0]}: the best teacher of a slice "
                              "needs each cell's teacher_params")
        by_t: dict[str, list[Mapping[str, Any]]] = {}
        for r in sorted(cells, key=lambda r: sizes[str(r["teacher"])]):
            by_t.setdefault(str(r["teacher"]), []).append(r)
        if len(by_t) < 2:
            continue
        names = list(by_t)
        means = [statistics.fmean(float(r["val_loss"]) for r in by_t[t]) for t in names]
        noise = seed_noise([seed_sd([float(r["val_loss"]) for r in by_t[t]]) for t in names]).value
        measured = names[best_index(means)]
        n = statistics.fmean(float(r["student_params"]) for r in cells)
        params = {t: sizes[t] for t in names}
        rec = law.best_teacher(n, float(tokens), {t: _teacher_loss(t, by_t[t], losses)
                                                  for t in names}, params=params)
        predicted = rec["best"]
        gap = means[names.index(predicted)] - min(means) if predicted in names else math.inf
        out.append({"student_target": target, "tokens": tokens, "teachers": names,
                    "measured_loss": [round(m, 5) for m in means], "measured_best": measured,
                    "predicted_best": predicted, "predicted_loss": rec["losses"],
                    "best_share": rec.get("best_share"), "noise": noise,
                    "agree": predicted == measured,
                    "within_noise": gap <= SIGNAL * noise})
    return out


def _teacher_loss(name: str, cells: Sequence[Mapping[str, Any]],
                  losses: Mapping[str, float]) -> float:
    """A teacher's loss as :func:`~capgap.law.budget.rows_from` takes it: from ``losses``,
    else from its cells' ``teacher_loss``."""
    value = losses.get(name, cells[0].get("teacher_loss"))
    if value is None:
        raise CapgapError(f"no loss for teacher {name!r}: give it as --teacher-loss {name}=LOSS")
    return float(value)


def slice_line(s: Mapping[str, Any]) -> str:
    """One held-out slice in words: measured and predicted best teacher, how often the law's
    bootstrap resamples pick the prediction, and the verdict."""
    share = (s.get("best_share") or {}).get(s["predicted_best"])
    verdict = "right" if s["agree"] else "within noise" if s["within_noise"] else "wrong"
    return (f"S {format_size(s['student_target'])}, {format_size(s['tokens'])} tokens: measured "
            f"{s['measured_best']}, predicted {s['predicted_best']}"
            + (f" (in {share:.0%} of resamples)" if share is not None else "") + f": {verdict}")
