"""The T*/S bracket: what a coarse teacher grid says about the ratio when a fit cannot run."""

from __future__ import annotations

import json

import pytest

from capgap.law import Cell, fit_law
from capgap.law.bracket import bracket_text
from capgap.results.findings import findings

TEACHERS = [2e6, 4e6, 8e6, 16e6]


def _cells(student: float, losses: list[float], seeds: int = 1, jitter: float = 0.0) -> list[Cell]:
    return [Cell(student, t, loss + (seed - (seeds - 1) / 2) * jitter, seed=str(seed))
            for t, loss in zip(TEACHERS, losses, strict=True) for seed in range(seeds)]


def _bracket(cells: list[Cell], tie_floor: float = 0.0) -> dict:
    return fit_law(cells, n_boot=20, tie_floor=tie_floor)["bracket"]


def test_an_interior_optimum_is_bounded_by_its_neighbours():
    (size,) = _bracket(_cells(1e6, [5.0, 4.8, 4.9, 5.1]))["sizes"]
    assert (size["lo"], size["hi"]) == (2e6, 8e6)
    assert (size["ratio_lo"], size["ratio_hi"]) == (2.0, 8.0)


def test_edges_are_bounded_by_the_student_below_and_unbounded_above():
    low, high = _bracket(_cells(1e6, [4.0, 4.5, 4.6, 4.7]) + _cells(1.5e6, [5.0, 4.9, 4.8, 4.7]))[
        "sizes"]
    assert (low["ratio_lo"], low["ratio_hi"]) == (1.0, 4.0)
    assert low["lo"] == 1e6
    assert high["ratio_hi"] is None and high["ratio_lo"] == pytest.approx(8e6 / 1.5e6)


def test_teachers_within_the_noise_are_tied_and_widen_the_bracket():
    cells = _cells(1e6, [5.0, 4.800, 4.805, 5.1])
    assert _bracket(cells)["sizes"][0]["tied"] == [4e6]
    wide = _bracket(cells, tie_floor=0.004)["sizes"][0]  # 0.005 < 3 x 0.004
    assert wide["tied"] == [4e6, 8e6] and (wide["lo"], wide["hi"]) == (2e6, 16e6)
    seeded = _bracket(_cells(1e6, [5.0, 4.800, 4.805, 5.1], seeds=3, jitter=0.01))["sizes"][0]
    assert seeded["tied"] == [4e6, 8e6] and seeded["noise"] == pytest.approx(0.01)


def test_the_intersection_bounds_the_ratio_and_places_the_papers():
    # S 1M: best 4M -> (2, 8); S 2M: best 8M -> (2, 8): a common ratio in (2, 8), 2.5 inside
    b = _bracket(_cells(1e6, [5.0, 4.8, 4.9, 5.1]) + _cells(2e6, [5.0, 4.9, 4.8, 4.85]))
    assert b["consistent"] is True and b["common"] == [2.0, 8.0]
    assert b["reference"] == 2.5 and b["reference_inside"] is True
    assert "T*/S in (2.00, 8.00)x by 2 size(s); 2.5x is inside" in bracket_text(b)
    json.dumps(b)  # law.json holds it


def test_disjoint_brackets_reject_a_single_ratio():
    # S 1M best at 16M (ratio > 8); S 2M best at 2M's low edge (ratio < 2)
    b = _bracket(_cells(1e6, [5.0, 4.9, 4.8, 4.7]) + _cells(2e6, [4.0, 4.5, 4.6, 4.7]))
    assert b["consistent"] is False and b["common"] is None and b["reference_inside"] is None
    assert bracket_text(b).startswith("no single T*/S fits every size")


def test_h3_is_answered_from_the_bracket_when_too_few_optima_are_interior():
    law = fit_law(_cells(1e6, [5.0, 4.9, 4.8, 4.7]) + _cells(2e6, [4.0, 4.5, 4.6, 4.7]),
                  n_boot=20)
    assert law["status"] == "insufficient"
    h3 = findings([], law, {"objective": "soft_ce"})["h3"]
    assert h3["verdict"] == "no" and "no single ratio" in h3["why"]
    # S 1M interior (2, 8); S 1.5M at the low edge (1, 2.67): a common ratio in (2, 2.67)
    agree = fit_law(_cells(1e6, [5.0, 4.8, 4.9, 5.1]) + _cells(1.5e6, [4.0, 4.5, 4.6, 4.7]),
                    n_boot=20)
    h3 = findings([], agree, {"objective": "soft_ce"})["h3"]
    assert h3["verdict"] == "not rejected" and h3["bracket"]["common"] == pytest.approx([2, 8 / 3])


def test_a_curve_uses_shared_seeds_and_one_student_size_per_teacher():
    from capgap.law.cells import Cell
    from capgap.law.optimum import build_curve

    cells = [Cell(100.0, 300.0, 5.00, seed="0"), Cell(100.0, 300.0, 4.90, seed="1"),
             Cell(120.0, 600.0, 4.95, seed="0")]  # T=300 has an extra seed; sizes differ
    curve = build_curve(cells)
    assert [len(v) for v in curve.values] == [1, 1] and curve.means.tolist() == [5.00, 4.95]
    assert curve.student_params == pytest.approx(110.0)  # not (100 + 100 + 120) / 3
    unseeded = build_curve([Cell(100.0, 300.0, 5.0), Cell(100.0, 300.0, 4.9),
                            Cell(100.0, 600.0, 4.95)])
    assert [len(v) for v in unseeded.values] == [2, 1]  # nothing to balance on
