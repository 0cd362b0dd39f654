"""The budget-aware law: cells drawn from a known law are fitted, and cells the fit never saw
(a larger budget, a size between the fitted ones) are predicted, best teacher included."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from capgap.cli import main
from capgap.errors import CapgapError
from capgap.law.budget import BudgetLaw, Row, fit_budget_law, student_loss, supervised_loss

SUP = {"E": 1.8, "A": 100.0, "alpha": 0.34, "B": 100.0, "beta": 0.28, "gamma": 1.0}
# A broken power law sharp enough that bigger students want stronger teachers (capacity gap).
KD = {"c0": 0.0, "c1": 5.0, "d1": 0.5, "f1": 0.2}
TEACHERS = dict(zip([f"T{i}" for i in range(9)], np.geomspace(4.6, 2.2, 9).round(4), strict=True))
NOISE = 0.003


def cells(sizes, budgets, seed=0) -> list[Row]:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for d in budgets:
            rows.append(Row(n, d, float(supervised_loss(n, d, SUP)) + rng.normal(0, NOISE)))
            for name, lt in TEACHERS.items():
                y = float(student_loss(n, d, lt, SUP, KD)) + rng.normal(0, NOISE)
                rows.append(Row(n, d, y, lt, name))
    return rows


@pytest.fixture(scope="module")
def law() -> BudgetLaw:
    return fit_budget_law(cells([2e5, 6e5, 2e6, 6e6], [5e5, 1e6, 2e6]), bootstrap=8)


def test_fits_its_own_cells_to_the_noise(law: BudgetLaw) -> None:
    assert law.fit["rmse_nats"] < 2 * NOISE
    assert law.fit["bootstrap"]["fitted"] >= 6
    assert {"E", "c1", "level"} <= set(law.ci)


def test_predicts_cells_it_never_saw(law: BudgetLaw) -> None:
    """A 2x larger budget and a size between the fitted ones: losses within a few noise sds,
    and the best teacher the true law's (or one within the noise of it)."""
    held = [Row(n, d, 0.0) for n in (1.1e6, 3.5e6) for d in (4e6,)]
    for r in held:
        true = student_loss(r.n, r.d, np.array(list(TEACHERS.values())), SUP, KD)
        pred = law.loss(r.n, r.d, np.array(list(TEACHERS.values())))
        assert np.abs(pred - true).mean() < 5 * NOISE
        rec = law.best_teacher(r.n, r.d, TEACHERS)
        assert true[list(TEACHERS).index(rec["best"])] - true.min() < 2 * NOISE
        assert abs(rec["baseline"] - float(supervised_loss(r.n, r.d, SUP))) < 5 * NOISE


def test_the_optimum_moves_with_the_student(law: BudgetLaw) -> None:
    """The true law's best teacher gets stronger with the student; the fitted one must too."""
    best = [law.best_teacher(n, 2e6, TEACHERS)["best"] for n in (2e5, 6e6)]
    assert TEACHERS[best[1]] < TEACHERS[best[0]]


def test_round_trips_through_json(law: BudgetLaw) -> None:
    back = BudgetLaw.from_dict(json.loads(json.dumps(law.to_dict())))
    assert back.best_teacher(1e6, 1e6) == law.best_teacher(1e6, 1e6)


def test_too_few_cells_is_a_clear_error() -> None:
    with pytest.raises(CapgapError, match="CE-only cells at >= 2 student sizes"):
        fit_budget_law(cells([1e6], [1e6]), bootstrap=0)


def test_cli_fits_from_cells_and_predicts_with_tokens(tmp_path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "cells.csv"
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student_params", "tokens", "val_loss", "alpha", "teacher", "status"])
        for r in cells([2e5, 6e5, 2e6, 6e6], [5e5, 1e6, 2e6]):
            w.writerow([r.n, r.d, r.loss, 1.0 if r.teacher is None else 0.5, r.teacher or "", "done"])
    losses = [f"--teacher-loss={k}={v}" for k, v in TEACHERS.items()]
    out = tmp_path / "budget.json"
    assert main(["law", "budget", str(path), *losses, "--bootstrap", "4", "--out", str(out)]) == 0
    assert "rmse" in capsys.readouterr().out
    assert main(["law", "predict", "--law", str(out), "--student-params", "1M", "--tokens", "4M",
                 "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["best"] in TEACHERS and set(rec["losses"]) == set(TEACHERS)
    assert main(["law", "predict", "--law", str(out), "--student-params", "1M"]) == 2
    assert "add --tokens" in capsys.readouterr().err
    assert main(["law", "budget", str(path), "--bootstrap", "0"]) == 2  # teachers' losses missing
    assert "--teacher-loss T" in capsys.readouterr().err


# Pruned students: the baseline of a student cut r-fold from its teacher carries damage that
# fades with the budget; cells drawn from that law must give its constants back.
DAMAGE = SUP | {"K": 2.0, "kappa": 1.2, "eta": 0.15}
SIZES = dict(zip(TEACHERS, np.geomspace(8e5, 2e7, len(TEACHERS)), strict=True))


def pruned_cells(sizes, budgets, seed=0) -> list[Row]:  # noqa: ANN001
    rng = np.random.default_rng(seed)
    rows = []
    for n in sizes:
        for d in budgets:
            for name, lt in TEACHERS.items():
                if SIZES[name] <= n:
                    continue
                r = SIZES[name] / n
                base = float(supervised_loss(n, d, DAMAGE)) + DAMAGE["K"] * np.log(r) ** 1.2 * d ** -0.15
                rows.append(Row(n, d, base + rng.normal(0, NOISE), ratio=r))
                y = float(student_loss(n, d, lt, DAMAGE, KD, r)) + rng.normal(0, NOISE)
                rows.append(Row(n, d, y, lt, name, r, SIZES[name]))
    return rows


@pytest.fixture(scope="module")
def pruned_law() -> BudgetLaw:
    return fit_budget_law(pruned_cells([2e5, 6e5, 2e6], [5e5, 1e6, 2e6]), bootstrap=16)


def test_damage_is_fitted_and_recovered_within_its_intervals(pruned_law: BudgetLaw) -> None:
    assert pruned_law.damage and pruned_law.fit["damage"]
    assert pruned_law.fit["rmse_nats"] < 2 * NOISE
    for name in ("K", "kappa", "eta"):
        lo, hi = pruned_law.ci[name]
        assert lo <= DAMAGE[name] <= hi, (name, pruned_law.ci[name], pruned_law.supervised[name])


def test_without_the_damage_term_pruned_cells_do_not_fit() -> None:
    """The paper's form on the same cells: the damage has nowhere to go."""
    law = fit_budget_law(pruned_cells([2e5, 6e5, 2e6], [5e5, 1e6, 2e6]), bootstrap=0, damage=False)
    assert law.fit["rmse_nats"] > 10 * NOISE


def test_damage_prediction_needs_teacher_sizes_and_skips_smaller_ones(pruned_law: BudgetLaw) -> None:
    rec = pruned_law.best_teacher(1.5e6, 4e6)  # the sizes seen in the fit
    assert set(rec["losses"]) == {t for t, p in SIZES.items() if p > 1.5e6}
    assert rec["skipped"] == [t for t, p in SIZES.items() if p <= 1.5e6]
    true = {t: float(student_loss(1.5e6, 4e6, TEACHERS[t], DAMAGE, KD, SIZES[t] / 1.5e6))
            for t in rec["losses"]}
    assert true[rec["best"]] - min(true.values()) < 2 * NOISE
    with pytest.raises(CapgapError, match="give the size of teacher X"):
        pruned_law.best_teacher(1e6, 1e6, {"X": 3.0})
    scratch = pruned_law.best_teacher(1e6, 1e6, {"X": 3.0}, init="scratch")
    assert "baselines" not in scratch and scratch["losses"]["X"] > 3.0
