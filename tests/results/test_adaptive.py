"""The adaptive selection on loss surfaces with a known answer: a valley per student size with
its bottom on a grid teacher, plus seeded noise below the margin to the neighbours; and on
hand-made rows whose dropped teachers and reasons are known."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from capgap.cli import main
from capgap.errors import CapgapError
from capgap.results.adaptive import AdaptiveConfig, replay, select, spread
from capgap.results.store import Store

STEP = 1.3  # teacher grid ratio
N_TEACHERS = 12
TEACHERS = {f"T{j:02d}": int(1e5 * STEP ** j) for j in range(N_TEACHERS)}
NAMES = list(TEACHERS)


def cell(teacher: str, loss: float | None, *, student: int = 50_000, seed: int = 0,
         alpha: float = 0.5, objective: str = "soft_ce") -> dict:
    """A row (finished when ``loss`` is given); a baseline when ``alpha`` is 1."""
    objective = objective if alpha < 1 else "ce"
    return {"key": f"{teacher}-{student}-{seed}-{objective}", "teacher": teacher,
            "teacher_params": TEACHERS[teacher], "student_target": student,
            "student_params": student, "objective": objective, "alpha": alpha,
            "allocation": "global", "init": "pruned", "tokens": 1000, "seed": seed,
            "status": "pending" if loss is None else "done", "val_loss": loss,
            "distill_s": 10.0}


def surface(best: dict[int, int], seeds: int, sd: float, rng_seed: int,
            width: float = 0.5) -> list[dict]:
    """Every cell of a grid whose loss at student size S has its valley's bottom on teacher
    ``best[S]``: 3 + width * (ln T - ln T*)^2 + normal(0, sd), with baselines 0.3 above."""
    rng = np.random.default_rng(rng_seed)
    rows = []
    for student, j in best.items():
        centre = np.log(TEACHERS[NAMES[j]])
        for name, t in TEACHERS.items():
            if t <= student:
                continue
            for seed in range(seeds):
                loss = 3.0 + width * (np.log(t) - centre) ** 2 + rng.normal(0, sd)
                rows.append(cell(name, float(loss), student=student, seed=seed))
                rows.append(cell(name, float(loss) + 0.3, student=student, seed=seed, alpha=1))
    return rows


BEST = {50_000: 3, 90_000: 5, 150_000: 8, 200_000: 11}  # interior ones and the high edge


@pytest.mark.parametrize("rng_seed", range(4))
@pytest.mark.parametrize("seeds,sd", [(1, 0.001), (3, 0.003)])
def test_finds_the_true_best_with_fewer_cells_never_dropping_it(rng_seed, seeds, sd):
    """The margin to the best's neighbours (0.5 x ln(1.3)^2 = 0.034 nats) is above 3 x noise:
    every round leaves the true best in, and the end agrees with the full grid."""
    grid = surface(BEST, seeds, sd, rng_seed)
    by_key = {r["key"]: r for r in grid}
    seen: dict[str, dict] = {}
    while (sel := select(grid, seen.values())).next:
        for c in sel.curves:
            dropped = {d.teacher for d in c.dropped}
            assert NAMES[BEST[c.setting["student_target"]]] not in dropped, c
        seen |= {k: by_key[k] for k in sel.next}
    assert {c.setting["student_target"]: c.best for c in sel.curves} == \
        {s: NAMES[j] for s, j in BEST.items()}
    result = replay(grid)
    assert result["same_best"] == [len(BEST), len(BEST)]
    assert result["cells"]["used"] == len(seen) < len(grid) == result["cells"]["total"]
    assert result["cells"]["fraction"] < 0.6  # a valley on 12 teachers needs about 5 of them
    assert all(c["cells"][0] < c["cells"][1] for c in result["curves"])


def test_noise_beyond_the_margin_keeps_teachers_in():
    """Seeds 0.05 nats apart make the same gap a tie: nothing is dropped, the grid runs."""
    flat = [cell(t, 3.0 + 0.02 * j + (0.05 if s else 0.0), seed=s)
            for j, t in enumerate(NAMES[:5]) for s in range(2)]
    full = replay(flat)
    assert full["cells"]["fraction"] == 1.0 and full["same_best"] == [1, 1]
    sharp = [cell(t, 3.0 + 0.2 * j, seed=s) for j, t in enumerate(NAMES[:5]) for s in range(2)]
    assert replay(sharp)["cells"]["fraction"] < 1.0


def test_dominated_and_outside_teachers_are_dropped_with_their_reason():
    """Start T00, T02, T04 (ends and middle); the best is T00, T02 and T04 are beyond noise:
    T01 is the one left to run, T03 lies beyond the dominated T02."""
    names = NAMES[:5]
    grid = [cell(t, None) for t in names]
    rows = [cell("T00", 3.0), cell("T02", 3.1), cell("T04", 3.3)]
    (curve,) = select(grid, rows).curves
    assert curve.best == "T00" and curve.tied == ["T00"] and curve.phase == "narrow"
    assert curve.next == ["T01"] and curve.bracket == [None, "T02"]
    reasons = {d.teacher: d for d in curve.dropped}
    assert set(reasons) == {"T02", "T03", "T04"}
    assert reasons["T02"].measured and reasons["T02"].reason.startswith(
        "dominated: loss 3.1000 is 0.1000 above the best T00 (3.0000), more than 3 x noise")
    assert not reasons["T03"].measured and "beyond T02" in reasons["T03"].reason
    (curve,) = select(grid, [*rows, cell("T01", 3.05)]).curves
    assert curve.phase == "done" and not curve.next and curve.best == "T00"


def test_start_runs_ends_and_middle_with_all_seeds_and_baselines():
    grid = [cell(t, None, seed=s, alpha=a) for t in NAMES[:7] for s in (0, 1) for a in (0.5, 1)]
    sel = select(grid, [])
    assert sel.curves[0].next == ["T00", "T03", "T06"] and sel.curves[0].phase == "start"
    assert sorted(sel.next) == sorted(r["key"] for r in grid
                                      if r["teacher"] in ("T00", "T03", "T06"))
    assert spread(12, 3) == {0, 6, 11} and spread(2, 3) == {0, 1} and spread(5, 2) == {0, 4}


def test_a_shared_baseline_is_chosen_once_and_partial_teachers_are_completed_first():
    grid = [cell(t, None, seed=s, objective=o) for t in NAMES[:3] for s in (0, 1)
            for o in ("soft_ce", "jsd")] + [cell(t, None, seed=s, alpha=1)
                                            for t in NAMES[:3] for s in (0, 1)]
    sel = select(grid, [])
    assert len(sel.next) == len(grid) == len(set(sel.next))  # 3 start teachers: everything
    rows = [cell("T00", 3.0, seed=0), cell("T01", 3.5, seed=0), cell("T02", 3.6, seed=0)]
    sel = select(grid, rows)
    soft = next(c for c in sel.curves if c.setting["objective"] == "soft_ce")
    assert soft.phase == "complete" and soft.next == NAMES[:3]
    assert "T00-50000-1-soft_ce" in sel.next and "T00-50000-0-soft_ce" not in sel.next


def test_same_rows_in_any_order_give_the_same_choices():
    grid = surface(BEST, 2, 0.003, 7)
    rows = [r for r in grid if r["teacher"] in ("T00", "T05", "T11", "T04", "T06")]
    want = select(grid, rows).to_dict()
    rng = random.Random(0)
    for _ in range(3):
        rng.shuffle(grid)
        rng.shuffle(rows)
        assert select(grid, rows).to_dict() == want


def test_failed_cells_are_not_chosen_again():
    names = NAMES[:3]
    grid = [cell(t, None) for t in names]
    keys = {r["teacher"]: r["key"] for r in grid}
    rows = [cell("T00", 3.0), cell("T02", 3.2)]
    sel = select(grid, rows, exclude={keys["T01"]})
    (curve,) = sel.curves
    assert not sel.next and curve.phase == "done"
    assert [(d.teacher, "failed" in d.reason) for d in curve.dropped] == [("T01", True),
                                                                          ("T02", False)]
    assert select(grid, [], exclude=set(keys.values())).curves[0].phase == "done"


def test_rows_outside_the_grid_are_ignored():
    grid = [cell(t, None) for t in NAMES[:3]]
    stranger = {**cell("T01", 1.0), "key": "old-config"}
    assert select(grid, [stranger]).curves[0].phase == "start"


def test_config_is_checked():
    from capgap import config

    with pytest.raises(CapgapError, match="adaptive.start"):
        config.checked(AdaptiveConfig(True, start=1))
    with pytest.raises(CapgapError, match="noise_floor"):
        config.checked(AdaptiveConfig(True, noise_floor=-1))
    with pytest.raises(CapgapError, match="no finished distilled"):
        replay([cell("T00", 3.0, alpha=1)])


def test_replay_cli_writes_json(tmp_path, capsys):
    store = Store(tmp_path / "results.sqlite")
    for r in surface({50_000: 3}, 1, 0.001, 0):
        store.plan(r["key"], r)
        store.mark_done(r["key"], {"val_loss": r["val_loss"], "distill_s": r["distill_s"]})
    store.close()
    out = tmp_path / "replay.json"
    assert main(["law", "adaptive-replay", str(tmp_path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    result = json.loads(out.read_text())
    used, total = result["cells"]["used"], result["cells"]["total"]
    assert result["sources"] == [str(tmp_path)] and used < total == 24
    assert f"{used} of {total} cells" in printed and "best T03 (grid T03)" in printed
    assert result["cost"]["tokens"]["fraction"] == pytest.approx(used / total)
    assert main(["law", "adaptive-replay", str(tmp_path / "nothing")]) == 2


def test_teacher_families_pool_sources_that_share_a_teacher():
    from capgap.results.adaptive import teacher_families

    def rows(*teachers: tuple[str, int]) -> list[dict]:
        return [{"teacher": t, "teacher_params": p} for t, p in teachers]

    sources = {"fit": rows(("P0", 1), ("P1", 2)), "g": rows(("G0", 1)), "size": rows(("P1", 2)),
               "budget": rows(("P0", 1)), "other": rows(("P0", 9))}  # P0 of another size
    assert teacher_families(sources) == [["fit", "size", "budget"], ["g"], ["other"]]


def test_replay_keeps_each_family_on_its_own_teacher_axis(tmp_path, capsys):
    """Two families with the same student sizes and settings: pooled into one axis, the
    replay would mix their teachers; by family each finds its own valley."""
    for name, best, prefix in (("a", 3, "T"), ("b", 8, "U")):
        store = Store(tmp_path / name / "results.sqlite")
        for r in surface({50_000: best}, 1, 0.001, 0):
            r = r | {"key": prefix + r["key"], "teacher": prefix + r["teacher"][1:]}
            store.plan(r["key"], r)
            store.mark_done(r["key"], {"val_loss": r["val_loss"], "distill_s": r["distill_s"]})
        store.close()
    out = tmp_path / "replay.json"
    assert main(["law", "adaptive-replay", str(tmp_path / "a"), str(tmp_path / "b"),
                 "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert {c["family"]: c["full_best"] for c in result["curves"]} == {"a": "T03", "b": "U08"}
    assert all(c["same"] for c in result["curves"]) and result["same_best"] == [2, 2]
    assert {t[0] for c in result["curves"] for t in c["run"]} == {"T", "U"}
    for c in result["curves"]:
        assert {t[0] for t in c["run"]} == {"T" if c["family"] == "a" else "U"}
    fam = result["families"]
    assert result["cells"]["used"] == fam["a"]["cells"]["used"] + fam["b"]["cells"]["used"]
    assert result["cells"]["total"] == 48
    assert "a: " in capsys.readouterr().out
