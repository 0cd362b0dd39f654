"""Held-out validation of the budget-aware law: cells drawn from a known law with pruning
damage, a larger budget and a student size never fitted held out, three seeds each."""

from __future__ import annotations

import json

import numpy as np
import pytest

from capgap.cli import main
from capgap.errors import CapgapError
from capgap.law.budget import baseline_loss, student_loss
from capgap.law.holdout import holdout, is_held_out, seed_noise_nats
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
    assert law.fit["cells"] == rec["fit_cells"]
    assert {c["tokens"] for c in rec["cells"]} == {int(d) for d in BUDGETS}
    assert all(c["tokens"] == 4e6 or c["student_target"] == 1.2e6 for c in rec["cells"])


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
