"""Recommendations from a fitted law."""

from __future__ import annotations

import json
import math

import pytest

from capgap.errors import CapgapError
from capgap.law import (
    fit_law,
    fit_points,
    load_law,
    parse_size,
    parse_sizes,
    predict,
    predict_range,
)


@pytest.fixture
def law(make_cells):
    return fit_law(make_cells(n_sizes=5, seeds=3, noise=0.01), n_boot=300, optimum="quadratic")


def test_predict_inside_range_uses_both_laws(law):
    n = 2e6
    rec = predict(law, n)
    assert rec.teacher_linear == pytest.approx(law["slope"] * n + law["intercept"])
    assert rec.teacher_ratio == pytest.approx(law["ratio"] * n)
    assert rec.teacher_linear_ci[0] <= rec.teacher_linear <= rec.teacher_linear_ci[1]
    assert rec.teacher_ratio_ci == pytest.approx([c * n for c in law["ratio_ci"]])
    assert rec.extrapolation is None and rec.warnings == []
    assert rec.basis == "linear" and rec.ranking == [] and rec.closest_teacher is None


def test_predict_warns_with_the_extrapolation_factor(law):
    hi = law["size_range"][1]
    rec = predict(law, 100 * hi)
    assert rec.extrapolation == pytest.approx(100.0)
    assert any("100x above" in w for w in rec.warnings)
    low = predict(law, law["size_range"][0] / 4)
    assert low.extrapolation == pytest.approx(4.0)
    assert any("below" in w for w in low.warnings)


def test_ranking_is_by_log_distance(law):
    rec = predict(law, 2e6, teachers=[1e6, 4.5e6, 12e6, 5.5e6])
    target = rec.target
    assert rec.closest_teacher == min([1e6, 4.5e6, 12e6, 5.5e6],
                                      key=lambda t: abs(math.log(t / target)))
    distances = [d for _, d in rec.ranking]
    assert distances == sorted(distances)
    assert rec.ranking[0][1] == pytest.approx(abs(math.log(rec.closest_teacher / target)))


def test_negative_linear_law_falls_back_to_ratio():
    law = fit_points([(10, 14), (20, 40), (30, 66), (40, 92)], n_boot=50)  # T = 2.6 S − 12
    rec = predict(law, 2, teachers=[3, 6, 12])
    assert rec.teacher_linear < 0 and rec.basis == "ratio"
    assert rec.target == pytest.approx(law["ratio"] * 2)
    assert any("<= 0" in w for w in rec.warnings)


def test_refuses_insufficient_or_foreign_law(tmp_path, make_cells):
    bad = fit_law(make_cells(n_sizes=2, seeds=2), n_boot=50)
    with pytest.raises(CapgapError, match="no law was fitted"):
        predict(bad, 1e6)
    with pytest.raises(CapgapError, match="not a capgap law"):
        predict({"slope": 1.0}, 1e6)
    with pytest.raises(CapgapError, match="no such law file"):
        load_law(tmp_path / "missing.json")
    garbled = tmp_path / "law.json"
    garbled.write_text("{not json")
    with pytest.raises(CapgapError, match="not valid JSON"):
        load_law(garbled)


def test_predict_from_a_saved_law(tmp_path, law):
    path = tmp_path / "law.json"
    path.write_text(json.dumps(law))
    assert predict(path, 2e6).teacher_ratio == pytest.approx(predict(law, 2e6).teacher_ratio)
    with pytest.raises(CapgapError, match="positive"):
        predict(path, -5)


def test_size_parsing():
    assert parse_size("124M") == 124e6
    assert parse_size("1.5B") == 1.5e9
    assert parse_size("300k") == 3e5
    assert parse_size("2.5e6") == 2.5e6
    assert parse_sizes("70M, 160M,1B") == [70e6, 160e6, 1e9]
    for bad in ("abc", "-3M", "0", ""):
        with pytest.raises(CapgapError):
            parse_size(bad)


def _ranged_law(common, sizes=(1e6, 2e6)) -> dict:
    """A law.json with no fit but a common T*/S bracket, as ``capgap law fit`` writes it."""
    return {"status": "insufficient", "reason": "2 uncensored student size(s): more needed",
            "size_unit": "total parameters",
            "bracket": {"common": common, "n_sizes": len(sizes), "reference": 2.5,
                        "reference_inside": common[0] < 2.5 < (common[1] or math.inf),
                        "sizes": [{"student_params": s} for s in sizes]}}


def test_a_law_less_sweep_offers_its_bracket_as_a_teacher_range():
    rec = predict_range(_ranged_law([1.5, 4.0]), 1.5e6, teachers=[1e6, 2e6, 4e6, 8e6, 3e6])
    assert (rec.teacher_lo, rec.teacher_hi) == pytest.approx((2.25e6, 6e6))
    assert rec.reference_inside is True and rec.extrapolation is None
    assert sorted(rec.inside) == [3e6, 4e6]
    assert rec.ranking[0][0] == 4e6  # nearer the range's geometric middle, 3.67M, in ln
    outside = rec.ranking[2:]
    assert [t for t, _ in outside] == [2e6, 8e6, 1e6]
    assert [d for _, d in outside] == pytest.approx(
        [math.log(2.25 / 2), math.log(8 / 6), math.log(2.25)])
    assert any("not a confidence interval" in w for w in rec.warnings)
    assert json.loads(json.dumps(rec.to_dict()))["status"] == "range"


def test_a_range_unbounded_above_and_an_extrapolation():
    rec = predict_range(_ranged_law([3.7, None]), 8e6, teachers=[50e6, 30e6, 20e6])
    assert rec.teacher_hi is None and rec.teacher_lo == pytest.approx(29.6e6)
    assert rec.inside == [30e6, 50e6]  # unbounded: the smaller, cheaper teacher first
    assert rec.extrapolation == pytest.approx(4.0)
    assert any("4x above the largest" in w for w in rec.warnings)


def test_no_range_without_a_common_bracket(make_cells):
    with pytest.raises(CapgapError, match="admit no single T\\*/S"):
        predict_range({"status": "insufficient", "bracket": {"common": None, "n_sizes": 2}}, 1e6)
    with pytest.raises(CapgapError, match="holds no T\\*/S bracket"):
        predict_range({"status": "insufficient"}, 1e6)
    law = fit_law(make_cells(n_sizes=2, seeds=2), n_boot=50)
    rec = predict_range(law, 1e6)
    lo, hi = law["bracket"]["common"]
    assert rec.teacher_lo == pytest.approx(lo * 1e6)
    assert rec.teacher_hi == (None if hi is None else pytest.approx(hi * 1e6))
