"""Held-out validation of the budget-aware law: cells drawn from a known law with pruning
damage, a larger budget and a student size never fitted held out, three seeds each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capgap.cli import main
from capgap.errors import CapgapError
from capgap.law.budget import baseline_loss, student_loss
from capgap.law.holdout import holdout, is_held_out, seed_noise_nats, setting_cells
from capgap.results.store import DB_NAME, Store
from capgap.units import format_size
from tests.law.test_budget import DAMAGE, KD, NOISE, SIZES, TEACHERS

STUDENTS = (2e5, 4e5, 6e5, 1.2e6, 2e6)
BUDGETS = (5e5, 1e6, 2e6, 4e6)


def records(seeds: int = 3) -> list[dict]:
    rng = np.random.default_rng(1)
    out = []
    for n in STUDENTS:
        for d in BUDGETS:
            for name, lt in TEACHERS.items():
                p = SIZES[name]
                if p <= n:
                    continue
                for seed in range(seeds):
                    common = {"student_target": int(n), "student_params": n, "tokens": int(d),
                              "teacher": name, "teacher_params": p, "seed": seed,
                              "init": "pruned", "status": "done"}
                    base = float(baseline_loss(n, d, DAMAGE, p / n))
                    out.append(common | {"alpha": 1.0, "val_loss": base + rng.normal(0, NOISE)})
                    y = float(student_loss(n, d, lt, DAMAGE, KD, p / n))
                    out.append(common | {"alpha": 0.5, "val_loss": y + rng.normal(0, NOISE)})
    return out


@pytest.fixture(scope="module")
def result() -> tuple[dict, object]:
    return holdout(records(), TEACHERS, {"tokens": [4e6], "student_target": [1.2e6]}, bootstrap=0)


def test_the_fit_never_sees_a_held_out_cell(result) -> None:  # noqa: ANN001
    rec, law = result
    every = [r for r in records() if r["status"] == "done"]
    held = [r for r in every if r["tokens"] == 4e6 or r["student_target"] == 1.2e6]
    assert rec["held_out_cells"] == len(held) and rec["fit_cells"] == len(every) - len(held)
    assert {c["tokens"] for c in rec["cells"]} == {int(d) for d in BUDGETS}
    assert all(c["tokens"] == 4e6 or c["student_target"] == 1.2e6 for c in rec["cells"])
    # what the held-out cells measured cannot move the fit: shift them by a whole nat
    shifted = [r | {"val_loss": r["val_loss"] + 1.0}
               if r["tokens"] == 4e6 or r["student_target"] == 1.2e6 else r for r in records()]
    again, law2 = holdout(shifted, TEACHERS, {"tokens": [4e6], "student_target": [1.2e6]},
                          bootstrap=0)
    assert law2.supervised == law.supervised and law2.distilled == law.distilled
    assert again["mae_nats"] == pytest.approx(1.0, abs=3 * NOISE)


def test_predicts_held_out_losses_and_best_teachers(result) -> None:  # noqa: ANN001
    rec, _ = result
    assert rec["seed_noise_cells"] > 0
    assert rec["seed_noise_nats"] == pytest.approx(NOISE, rel=0.3)
    assert rec["mae_nats"] < 3 * NOISE
    assert rec["argmin_within_noise"] == 1.0
    assert len(rec["slices"]) == len(STUDENTS) + len(BUDGETS) - 1


def test_a_wrong_law_shows_up_in_the_figures() -> None:
    """The paper's form without the damage term: held-out errors far above the noise."""
    rec, _ = holdout(records(1), TEACHERS, {"tokens": [4e6]}, bootstrap=0, damage=False)
    assert rec["mae_nats"] > 10 * NOISE
    assert rec["seed_noise_nats"] is None and rec["seed_noise_cells"] == 0


def test_split_rules() -> None:
    assert is_held_out({"tokens": 4000000}, {"tokens": ["4e6"]})
    assert not is_held_out({"tokens": 2000000}, {"tokens": [4e6]})
    assert is_held_out({"init": "scratch"}, {"init": ["scratch"]})
    with pytest.raises(CapgapError, match="no finished cell matches"):
        holdout(records(1), TEACHERS, {"tokens": [8e6]}, bootstrap=0)
    assert seed_noise_nats([{"val_loss": 1.0, "seed": 0}]) == (None, 0)


def test_cli_writes_holdout_and_law(tmp_path, capsys) -> None:  # noqa: ANN001
    path = tmp_path / "cells.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records(3)))
    regime = tmp_path / "teachers" / "regime.json"
    regime.parent.mkdir()
    regime.write_text(json.dumps({"teachers": [{"name": t, "val_loss": float(v),
                                                "params": SIZES[t]} for t, v in TEACHERS.items()]}))
    out, law = tmp_path / "holdout.json", tmp_path / "law.json"
    assert main(["law", "holdout", str(path), "--teachers", str(tmp_path / "teachers"),
                 "--hold-out", "tokens=4M", "--bootstrap", "0", "--out", str(out),
                 "--law-out", str(law)]) == 0
    text = capsys.readouterr().out
    assert "mae" in text and "seed noise" in text
    rec = json.loads(out.read_text())
    assert {"mae_nats", "seed_noise_nats", "argmin_agreement"} <= set(rec)
    assert main(["law", "predict", "--law", str(law), "--student-params", "1M", "--tokens", "8M",
                 "--teachers", str(tmp_path / "teachers"), "--json"]) == 0
    pred = json.loads(capsys.readouterr().out)
    assert set(pred["losses"]) == {t for t, p in SIZES.items() if p > 1e6}
    assert pred["teacher_params"] == {t: SIZES[t] for t in pred["losses"]}
    assert main(["law", "predict", "--law", str(law), "--student-params", "1M", "--tokens", "8M",
                 "--teachers", str(tmp_path / "teachers")]) == 0
    best = pred["best"]
    assert f"{best} ({format_size(SIZES[best])}, {SIZES[best] / 1e6:.2f}x): " in capsys.readouterr().out
    assert main(["law", "predict", "--law", str(law), "--student-params", "1M", "--tokens", "8M",
                 "--teachers", "T8=2.2@3e7,X=2.0"]) == 2
    assert "give the size of teacher X" in capsys.readouterr().err
    assert main(["law", "holdout", str(path), "--teachers", str(tmp_path / "teachers"),
                 "--hold-out", "tokens"]) == 2
    assert "expected KEY=VALUE" in capsys.readouterr().err


def test_bad_holdouts_are_refused_not_silently_fitted() -> None:
    cells = records(1)
    with pytest.raises(CapgapError, match="no cell has a column 'student_size'"):
        holdout(cells, TEACHERS, {"tokens": [4e6], "student_size": [1.2e6]}, bootstrap=0)
    clash = [*cells, cells[1] | {"teacher_params": SIZES[cells[1]["teacher"]] * 2}]
    with pytest.raises(CapgapError, match="two different teachers"):
        holdout(clash, TEACHERS, {"tokens": [4e6]}, bootstrap=0)
    two = [r | {"objective": "soft_ce" if r["alpha"] < 1 else "ce"} for r in cells]
    two += [r | {"objective": "reverse_kl", "val_loss": r["val_loss"] + 0.5}
            for r in cells if r["alpha"] < 1]
    with pytest.raises(CapgapError, match="objectives reverse_kl, soft_ce"):
        holdout(two, TEACHERS, {"tokens": [4e6]}, bootstrap=0)
    one = setting_cells(two, objective="soft_ce")
    assert len(one) == len(cells)  # its distilled cells and every baseline ("ce")
    rec, _ = holdout(one, TEACHERS, {"tokens": [4e6]}, bootstrap=0)
    assert rec["mae_nats"] < 3 * NOISE


def test_a_held_out_control_cell_keeps_its_pruning_damage() -> None:
    """A student cut from T8 and distilled from T5: predicted with T8's compression even
    when no held-out cell has T8 as its teacher."""
    cells = records(1)
    source = next(r for r in cells if r["teacher"] == "T8" and r["tokens"] == 5e5
                  and r["alpha"] == 1.0)
    n, p8 = source["student_params"], SIZES["T8"]
    control = {**source, "teacher": "T5", "teacher_params": SIZES["T5"], "pruned_from": "T8",
               "alpha": 0.5, "tokens": int(4e6),
               "val_loss": float(student_loss(n, 4e6, TEACHERS["T5"], DAMAGE, KD, p8 / n))}
    kept = [r for r in cells if r["tokens"] != 4e6 or r["teacher"] == "T5"]
    rec, _ = holdout([*kept, control], TEACHERS, {"tokens": [4e6]}, bootstrap=0)
    (cell,) = [c for c in rec["cells"] if c["pruned_from"] == "T8"]
    assert cell["ratio"] == pytest.approx(p8 / n)
    assert abs(cell["error_nats"]) < 3 * NOISE


def _sweep(root, cells: list[dict], losses: dict[str, float]):  # noqa: ANN001, ANN202
    """A sweep folder: the cells in results.sqlite, the teachers' regime.json beside them."""
    root.mkdir()
    store = Store(root / DB_NAME)
    for i, r in enumerate(cells):
        store.plan(str(i), {k: v for k, v in r.items() if k not in ("status", "val_loss")})
        store.mark_done(str(i), {"val_loss": r["val_loss"], "val_ppl": 1.0, "val_bpb": 1.0})
    store.close()
    (root / "teachers").mkdir()
    (root / "teachers" / "regime.json").write_text(json.dumps({"teachers": [
        {"name": t, "val_loss": float(v), "params": SIZES[t]} for t, v in losses.items()]}))
    return root


def test_cli_keeps_baselines_under_an_objective_and_refuses_two_families(tmp_path, capsys) -> None:  # noqa: ANN001
    cells = [r | {"objective": "soft_ce" if r["alpha"] < 1 else "ce", "allocation": "global"}
             for r in records(1) if r["tokens"] <= 2e6]
    one = _sweep(tmp_path / "a", cells, TEACHERS)
    out = tmp_path / "h.json"
    assert main(["law", "holdout", str(one), "--where", "objective=soft_ce", "--hold-out",
                 "tokens=2M", "--bootstrap", "0", "--out", str(out)]) == 0, capsys.readouterr().err
    rec = json.loads(out.read_text())
    assert rec["fit_cells"] + rec["held_out_cells"] == len(cells)  # baselines ("ce") kept
    other = _sweep(tmp_path / "b", cells, {t: v + 0.3 for t, v in TEACHERS.items()})
    assert main(["law", "holdout", str(one), str(other), "--hold-out", "tokens=1M",
                 "--bootstrap", "0", "--out", str(out)]) == 2
    assert "not the one of that name in another source" in capsys.readouterr().err
