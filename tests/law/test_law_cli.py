"""``capgap law fit`` / ``capgap law predict`` end to end through ``capgap.cli.main``."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from capgap.cli import main
from capgap.law import format_size, predict


def _strict_json(path: Path) -> dict:
    """Parse refusing NaN/Infinity, which are not JSON and break other readers."""
    def refuse(name: str) -> None:
        raise AssertionError(f"{path} holds {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def _cells_csv(path: Path, cells) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["student_params", "teacher_params", "metric", "seed", "objective",
                         "alpha"])
        for c in cells:
            writer.writerow([c.student_params, c.teacher_params, c.metric, c.seed, "soft_ce", 0.5])
            writer.writerow([c.student_params, c.teacher_params, c.metric - 1, c.seed, "ce", 1.0])
    return path


def test_fit_then_predict(tmp_path, capsys, make_cells):
    source = _cells_csv(tmp_path / "cells.csv", make_cells(n_sizes=5, seeds=2, noise=0.005))
    out, png = tmp_path / "law.json", tmp_path / "law.png"
    rc = main(["law", "fit", str(source), "--out", str(out), "--plot", str(png),
               "--where", "objective=soft_ce", "--bootstrap", "200"])
    printed = capsys.readouterr().out
    assert rc == 0
    law = _strict_json(out)
    assert law["status"] == "ok" and law["selection"]["where"] == {"objective": "soft_ce"}
    assert law["selection"]["dropped"]["where"] == law["selection"]["n_used"]
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert f"T* = {law['ratio']:.4g}·S" in printed and "R²" in printed

    rc = main(["law", "predict", "--law", str(out), "--student-params", "3M",
               "--teachers", "5M,7.5M,20M"])
    printed = capsys.readouterr().out
    assert rc == 0
    closest = predict(law, 3e6, [5e6, 7.5e6, 20e6]).closest_teacher
    assert f"closest available teacher: {format_size(closest)}" in printed

    rc = main(["law", "predict", "--law", str(out), "--student-params", "3B", "--json"])
    rec = json.loads(capsys.readouterr().out)
    assert rc == 0 and rec["extrapolation"] > 100 and rec["warnings"]


def test_points_csv_through_the_cli(tmp_path, capsys):
    source = tmp_path / "points.csv"
    source.write_text("student_params,teacher_params\n70,160\n160,410\n410,1000\n1000,2800\n")
    rc = main(["law", "fit", str(source), "--out", str(tmp_path / "law.json"),
               "--bootstrap", "100"])
    assert rc == 0
    assert "sizes, 100/100 resamples" in capsys.readouterr().out


def test_insufficient_sizes_exit_3_without_r2(tmp_path, capsys, make_cells):
    source = _cells_csv(tmp_path / "cells.csv", make_cells(n_sizes=2, seeds=2))
    out = tmp_path / "law.json"
    rc = main(["law", "fit", str(source), "--out", str(out), "--bootstrap", "50"])
    printed = capsys.readouterr().out
    assert rc == 3
    assert "no law fitted" in printed and "R²" not in printed
    assert "bracket (grid bound, any size): " in printed
    assert _strict_json(out)["status"] == "insufficient"
    law = _strict_json(out)
    lo, hi = law["bracket"]["common"]
    rc = main(["law", "predict", "--law", str(out), "--student-params", "1M", "--json"])
    ranged = json.loads(capsys.readouterr().out)
    assert rc == 3 and ranged["status"] == "range"  # not a law's T*, so not exit 0
    assert ranged["teacher_lo"] == pytest.approx(lo * 1e6)
    assert ranged["teacher_hi"] == (None if hi is None else pytest.approx(hi * 1e6))
    rc = main(["law", "predict", "--law", str(out), "--student-params", "1M",
               "--teachers", f"{lo * 0.5}M,{lo * 1.1}M"])
    printed = capsys.readouterr().out
    assert rc == 3 and "T* lies in (" in printed and "not a confidence interval" in printed
    assert f"inside the range: {format_size(lo * 1.1e6)}" in printed

    law["bracket"]["common"] = None  # sizes that admit no single ratio: nothing to offer
    out.write_text(json.dumps(law))
    rc = main(["law", "predict", "--law", str(out), "--student-params", "1M"])
    err = capsys.readouterr().err
    assert rc == 2 and "no teacher range to offer" in err and err.count("\n") == 1


@pytest.mark.parametrize("args", [
    ["fit", "{tmp}/missing.csv"],
    ["fit", "{tmp}/bad.csv"],
    ["fit", "{tmp}/cells.csv", "--where", "objective"],
    ["fit", "{tmp}/cells.csv", "--where", "objective=distill_v9"],
    ["fit", "{tmp}/cells.csv", "--plot", "{tmp}/law.gif"],
    ["fit", "{tmp}/cells.csv", "--bootstrap", "0"],
    ["fit", "{tmp}/cells.csv", "--tie-floor", "-0.1"],
    ["predict", "--law", "{tmp}/missing.json", "--student-params", "1M"],
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, make_cells, args):
    _cells_csv(tmp_path / "cells.csv", make_cells(n_sizes=3, seeds=1))
    (tmp_path / "bad.csv").write_text("student_params,teacher_params,metric\n1e6,2e6,nan?\n")
    out = tmp_path / "out.json"
    argv = ["law", *[a.format(tmp=tmp_path) for a in args]]
    rc = main(argv + (["--out", str(out)] if args[0] == "fit" else []))
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("capgap law: error:") and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "law.gif").exists()


def test_bad_student_size_is_one_line(tmp_path, capsys, make_cells):
    source = _cells_csv(tmp_path / "cells.csv", make_cells(n_sizes=3, seeds=2))
    out = tmp_path / "law.json"
    assert main(["law", "fit", str(source), "--out", str(out), "--bootstrap", "50"]) == 0
    capsys.readouterr()
    rc = main(["law", "predict", "--law", str(out), "--student-params", "three"])
    err = capsys.readouterr().err
    assert rc == 2 and "not a size" in err


def test_refitting_a_sweep_gives_the_sweeps_own_answer(tmp_path):
    """``capgap law fit`` defaults are the sweep's (one set, recorded in law.json): teachers
    within the noise floor of the best must tie in both, and the resamples agree."""
    from capgap.results import LAW_BOOTSTRAP, NOISE_FLOOR
    from capgap.sweep.runner import fit_rows

    losses = {1e6: [5.000, 4.996, 5.100], 2e6: [4.900, 4.897, 4.990]}
    rows = [{"student_params": s, "teacher_params": t, "metric": m, "seed": 0, "alpha": 0.5,
             "objective": "soft_ce"}
            for s, ms in losses.items() for t, m in zip((2 * s, 3 * s, 5 * s), ms, strict=True)]
    source = tmp_path / "cells.csv"
    with open(source, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    out = tmp_path / "law.json"
    main(["law", "fit", str(source), "--out", str(out)])
    refit = _strict_json(out)
    own = fit_rows(rows, {}, "total", LAW_BOOTSTRAP, "rows")
    assert refit["tie_floor"] == own["tie_floor"] == NOISE_FLOOR
    assert refit["n_boot"] == own["n_boot"] == LAW_BOOTSTRAP
    assert refit["bracket"] == own["bracket"]
