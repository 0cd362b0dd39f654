"""The law fit on synthetic sweeps with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from capgap.errors import CapgapError
from capgap.law import Cell, fit_law, fit_points, group_by_size
from capgap.law.fit import fit_ratio, r_squared

K_TRUE = 2.5
BOOT = 300


def _width(ci: list[float]) -> float:
    return ci[1] - ci[0]


@pytest.mark.parametrize("optimum", ["argmin", "quadratic"])
def test_recovers_ratio_and_ci_covers_truth(make_cells, optimum):
    law = fit_law(make_cells(n_sizes=6, seeds=4, noise=0.004), n_boot=BOOT, optimum=optimum)
    assert law["status"] == "ok" and law["ci_method"] == "seeds+sizes"
    assert law["n_points"] == 6
    assert law["ratio"] == pytest.approx(K_TRUE, rel=0.05)
    for key, truth in (("ratio", K_TRUE), ("slope", K_TRUE), ("intercept", 0.0)):
        lo, hi = law[f"{key}_ci"]
        assert lo <= truth <= hi, key
        assert lo <= law[key] <= hi, key  # the interval holds its own point estimate
    for size in law["sizes"]:
        lo, hi = size["t_opt_ci"]
        assert lo <= size["optimum"] <= hi


def test_exact_points_give_exact_line_and_zero_loo():
    s = np.array([1e6, 2e6, 4e6, 8e6])
    law = fit_points(list(zip(s, 3.0 * s + 1e5, strict=True)), n_boot=BOOT)
    assert law["slope"] == pytest.approx(3.0)
    assert law["intercept"] == pytest.approx(1e5, rel=1e-6)
    assert law["r2"] == pytest.approx(1.0)  # legitimately 1: 4 points on a line
    assert law["loo"]["linear_mare"] == pytest.approx(0.0, abs=1e-9)
    assert law["loo"]["ratio_mare"] > 0.0  # the intercept is real, k·S cannot match exactly
    assert law["ci_method"] == "sizes"
    assert law["slope_ci"] == pytest.approx([3.0, 3.0])


def test_ratio_r2_uses_centred_total_sum_of_squares():
    s = np.array([1.0, 2.0, 3.0, 4.0])
    t = np.array([10.0, 10.5, 11.0, 11.5])  # nearly constant: proportional law is poor
    fit = fit_ratio(s, t)
    k = np.sum(s * t) / np.sum(s * s)
    expected = 1 - np.sum((t - k * s) ** 2) / np.sum((t - t.mean()) ** 2)
    assert fit.ratio == pytest.approx(k)
    assert fit.r2 == pytest.approx(expected)
    assert fit.r2 < 0  # the uncentred R² would be ~0.8 here and hide it
    assert r_squared(np.array([5.0, 5.0]), np.array([5.0, 5.0])) is None


def test_exact_sweep_loo_is_zero(make_cells):
    law = fit_law(make_cells(n_sizes=5, seeds=2, noise=0.0), n_boot=BOOT)
    assert law["ratio"] == pytest.approx(K_TRUE)
    assert law["r2"] == pytest.approx(1.0)
    assert law["loo"]["linear_mare"] == pytest.approx(0.0, abs=1e-9)
    assert law["loo"]["ratio_mare"] == pytest.approx(0.0, abs=1e-9)
    assert [p[1] / p[0] for p in law["points"]] == pytest.approx([K_TRUE] * 5)


def test_censored_at_both_edges_flagged_and_left_out(make_cells):
    cells = make_cells(n_sizes=5, seeds=2, noise=0.0)
    s_min = min(c.student_params for c in cells)
    s_max = max(c.student_params for c in cells)
    # smallest size: only teachers above its optimum -> best is the smallest teacher;
    # largest size: only teachers below its optimum -> best is the largest teacher.
    cells = [c for c in cells if not (c.student_params == s_min and c.teacher_params < 2.6 * s_min)]
    cells = [c for c in cells if not (c.student_params == s_max and c.teacher_params > 2.4 * s_max)]
    law = fit_law(cells, n_boot=BOOT)
    first, last = law["sizes"][0], law["sizes"][-1]
    assert (first["censored"], first["censored_edge"]) == (True, "low")
    assert (last["censored"], last["censored_edge"]) == (True, "high")
    assert not first["used_in_fit"] and not last["used_in_fit"]
    assert law["n_points"] == 3
    assert s_min not in [p[0] for p in law["points"]] and s_max not in [p[0] for p in law["points"]]
    assert any("censored" in w for w in law["warnings"])


def test_fewer_than_three_uncensored_sizes_is_insufficient(make_cells):
    law = fit_law(make_cells(n_sizes=2, seeds=2), n_boot=BOOT)
    assert law["status"] == "insufficient"
    assert "2 uncensored" in law["reason"] and ">= 3" in law["reason"]
    assert "perfect by construction" in law["reason"]
    for key in ("slope", "intercept", "r2", "ratio", "ratio_r2", "slope_ci", "loo"):
        assert law[key] is None
    assert len(law["sizes"]) == 2 and law["n_points"] == 2


def test_ci_narrows_with_more_seeds(make_cells):
    few = fit_law(make_cells(seeds=2, noise=0.02, rng_seed=1), n_boot=BOOT, optimum="quadratic",
                  ci_method="seeds")
    many = fit_law(make_cells(seeds=16, noise=0.02, rng_seed=1), n_boot=BOOT,
                   optimum="quadratic", ci_method="seeds")
    assert _width(many["ratio_ci"]) < 0.6 * _width(few["ratio_ci"])
    assert _width(many["slope_ci"]) < _width(few["slope_ci"])
    widths = [(_width(a["t_opt_ci"]), _width(b["t_opt_ci"]))
              for a, b in zip(few["sizes"], many["sizes"], strict=True)]
    assert all(w_many < w_few for w_few, w_many in widths)


def test_single_seed_bootstraps_over_sizes(make_cells):
    law = fit_law(make_cells(seeds=1), n_boot=BOOT)
    assert law["ci_method"] == "sizes"
    assert all(s["t_opt_ci"] is None for s in law["sizes"])
    assert law["ratio_ci"][0] <= law["ratio"] <= law["ratio_ci"][1]
    with pytest.raises(CapgapError, match="needs >= 2 seeds"):
        fit_law(make_cells(seeds=1), n_boot=BOOT, ci_method="seeds")


def test_bootstrap_is_seeded(make_cells):
    cells = make_cells(seeds=3, noise=0.02)
    a = fit_law(cells, n_boot=BOOT, seed=7)
    b = fit_law(cells, n_boot=BOOT, seed=7)
    c = fit_law(cells, n_boot=BOOT, seed=8)
    assert a["ratio_ci"] == b["ratio_ci"] and a["bootstrap"] == b["bootstrap"]
    assert a["bootstrap"] != c["bootstrap"]
    assert len(a["bootstrap"]["slope"]) == a["n_boot_valid"] == BOOT


def test_higher_is_better_flips_the_argmin(make_cells):
    cells = make_cells(seeds=2)
    flipped = [Cell(c.student_params, c.teacher_params, -c.metric, seed=c.seed) for c in cells]
    lower = fit_law(cells, n_boot=BOOT)
    higher = fit_law(flipped, n_boot=BOOT, higher_is_better=True)
    assert [s["argmin"] for s in lower["sizes"]] == [s["argmin"] for s in higher["sizes"]]
    assert [s["continuous_optimum"] for s in lower["sizes"]] == pytest.approx(
        [s["continuous_optimum"] for s in higher["sizes"]])
    assert higher["metric"]["higher_is_better"] is True


def test_quadratic_vertex_exact_and_none_when_not_a_valley():
    s = 1e6
    teachers = s * np.array([1.5, 2.0, 3.0, 4.5, 7.0])
    valley = [Cell(s, t, 1 + (np.log(t) - np.log(2.5 * s)) ** 2) for t in teachers]
    fitted = fit_law(valley, n_boot=10)["sizes"][0]
    assert fitted["continuous_optimum"] == pytest.approx(2.5 * s, rel=1e-9)
    assert fitted["argmin"] == 3.0 * s
    hill = [Cell(s, t, 1 - (np.log(t) - np.log(2.5 * s)) ** 2 + 0.1 * (t == 1.5 * s))
            for t in teachers]
    peak = fit_law(hill, n_boot=10)["sizes"][0]
    assert peak["continuous_optimum"] is None and "open" in peak["continuous_note"]


def test_baselines_unfinished_and_censored_cells_are_dropped(make_cells):
    cells = make_cells(n_sizes=4, seeds=2, noise=0.0)
    s0 = cells[0].student_params
    t_small = min(c.teacher_params for c in cells if c.student_params == s0)
    decoys = [  # each would make the smallest teacher best if it were counted
        Cell(s0, t_small, 0.0, seed="0", alpha=1.0),
        Cell(s0, t_small, 0.0, seed="1", status="failed"),
        Cell(s0, t_small, 0.0, seed="2", censored=True),
        Cell(s0, t_small, None, seed="3"),
    ]
    law = fit_law(cells + decoys, n_boot=BOOT)
    assert law["sizes"][0]["argmin"] == pytest.approx(K_TRUE * s0)
    assert law["selection"]["dropped"] == {"where": 0, "not_done": 1, "baseline": 1,
                                           "censored": 1, "missing_metric": 1}
    assert law["selection"]["n_used"] == len(cells)


def test_mixed_settings_for_one_seed_are_refused(make_cells):
    cells = make_cells(n_sizes=3, seeds=1)
    other = [Cell(c.student_params, c.teacher_params, c.metric, seed=c.seed,
                  fields={"objective": "reverse_kl", "seed": c.seed}) for c in cells]
    with pytest.raises(CapgapError, match="objective"):
        fit_law(cells + other, n_boot=BOOT)
    law = fit_law(cells + other, where={"objective": "reverse_kl"}, n_boot=BOOT)
    assert law["selection"]["dropped"]["where"] == len(cells)


def test_students_within_one_percent_are_one_size():
    cells = [Cell(s, 5e6, 1.0) for s in (1.000e6, 1.004e6, 1.009e6, 1.02e6, 1.025e6)]
    groups = group_by_size(cells)
    assert [len(g) for g in groups] == [3, 2]
    labelled = [Cell(s, 5e6, 1.0, group="300k") for s in (1.0e6, 1.05e6)]
    assert [len(g) for g in group_by_size(labelled)] == [2]


@pytest.mark.parametrize("bad", [{"n_boot": 0}, {"ci": 1.5}, {"optimum": "median"},
                                 {"ci_method": "jackknife"}])
def test_bad_options_are_one_line_errors(make_cells, bad):
    with pytest.raises(CapgapError):
        fit_law(make_cells(n_sizes=3, seeds=2), **({"n_boot": 10} | bad))
