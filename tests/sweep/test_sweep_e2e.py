"""The sweep end to end on a tiny family: rows, baselines, resume, broken cells, workers."""

from __future__ import annotations

import json
import shutil
import types
from pathlib import Path

import pytest

from capgap.evaluate.api import evaluate_model
from capgap.results.regime import measured_teachers
from capgap.sweep import read_rows, run_sweep


def by_key(out: Path) -> dict[str, dict]:
    return {r["key"]: r for r in read_rows(out)}


def test_cells_land_done_with_baselines(finished_sweep, sweep_cfg):
    out, summary = finished_sweep
    student = int(sweep_cfg.students.sizes[0])
    rows = read_rows(out)
    assert summary.cells == 4 and summary.ran == 4 and summary.failed == 0
    assert {r["status"] for r in rows} == {"done"}
    assert sorted(r["teacher"] for r in rows) == ["A", "A", "B", "B"]
    base = [r for r in rows if r["alpha"] == 1.0]
    assert {r["teacher"] for r in base} == {"A", "B"} and {r["objective"] for r in base} == {"ce"}
    for r in rows:
        assert r["student_target"] == student
        assert abs(r["student_params"] - student) <= 0.01 * student
        assert 0 < r["val_loss"] < 6.0 and r["distill_s"] > 0
        assert r["sparsity"] == pytest.approx(1 - r["student_params"] / r["teacher_params"],
                                              abs=1e-5)
        assert (Path(r["cell_dir"]) / "DONE.json").is_file()
    assert (out / "scores" / "A" / "scores.json").is_file()
    # each teacher's distilled cell and baseline ran as one lockstep task, recorded as such
    assert {r["teacher"]: r["task"] for r in rows if r["alpha"] < 1} == \
        {r["teacher"]: r["task"] for r in rows if r["alpha"] == 1.0}
    assert len({r["task"] for r in rows}) == 2 and all(r["task"].startswith("group:") for r in rows)
    assert (out / "law.json").is_file() and summary.law["status"] != "ok"  # one size: no law
    # each teacher scored once on the very text and settings its students were scored on
    e = sweep_cfg.eval
    for r in rows:
        alone = evaluate_model(r["teacher_path"], sweep_cfg.data.corpus, e.max_bytes,
                               sweep_cfg.data.seq_len, e.batch_size)
        assert r["teacher_loss"] == pytest.approx(alone["loss"], abs=1e-6)
    assert {r["teacher_loss"] for r in rows if r["teacher"] == "A"} != \
        {r["teacher_loss"] for r in rows if r["teacher"] == "B"}
    losses, sizes = measured_teachers(out)  # what law predict --teachers OUT reads
    assert losses == {r["teacher"]: r["teacher_loss"] for r in rows}
    assert sizes == {r["teacher"]: r["teacher_params"] for r in rows}


def test_rerun_skips_every_finished_cell(finished_sweep, sweep_cfg):
    out, _ = finished_sweep
    before = by_key(out)
    cache = (out / "teacher_losses.json").read_text()
    (out / "teacher_losses.json").write_text("{not json")  # a cache that no longer reads
    again = run_sweep(sweep_cfg, out, workers=1, progress=False)
    assert again.ran == 0 and again.skipped == 4
    assert by_key(out) == before  # timings, attempts, timestamps, teacher losses untouched
    assert json.loads((out / "teacher_losses.json").read_text()) == json.loads(cache)


def test_broken_cell_is_redone(finished_sweep, sweep_cfg):
    out, _ = finished_sweep
    before = by_key(out)
    key = next(k for k, r in before.items() if r["alpha"] < 1)
    (Path(before[key]["cell_dir"]) / "DONE.json").unlink()
    again = run_sweep(sweep_cfg, out, workers=1, progress=False)
    after = by_key(out)
    assert again.ran == 1 and again.skipped == 3
    assert after[key]["status"] == "done" and after[key]["attempts"] == 2
    assert (Path(after[key]["cell_dir"]) / "DONE.json").is_file()
    assert {k: r for k, r in after.items() if k != key} == \
        {k: r for k, r in before.items() if k != key}


@pytest.mark.slow
def test_two_workers_give_the_same_rows(finished_sweep, sweep_cfg, sweep_root):
    out, _ = finished_sweep
    par = sweep_root / "par"
    shutil.copytree(out / "teachers", par / "teachers")  # same teachers, fresh cells
    summary = run_sweep(sweep_cfg, par, workers=2, progress=False)
    assert summary.ran == 4 and summary.failed == 0
    one, two = by_key(out), by_key(par)
    assert one.keys() == two.keys()
    for k in one:
        for col in ("val_loss", "val_ppl", "val_bpb", "student_params", "sparsity"):
            assert one[k][col] == two[k][col], (k, col)


@pytest.mark.slow
def test_ray_backend_gives_the_same_rows(finished_sweep, sweep_cfg, sweep_root):
    pytest.importorskip("ray")
    out, _ = finished_sweep
    ray_out = sweep_root / "ray"
    shutil.copytree(out / "teachers", ray_out / "teachers")
    summary = run_sweep(sweep_cfg, ray_out, workers=2, backend="ray", progress=False)
    assert summary.ran == 4 and summary.failed == 0
    one, two = by_key(out), by_key(ray_out)
    assert {k: r["val_loss"] for k, r in one.items()} == {k: r["val_loss"] for k, r in two.items()}


@pytest.mark.slow
def test_lockstep_groups_equal_cell_by_cell_runs(finished_sweep, sweep_cfg, sweep_root):
    """The fixture's sweep trained each teacher's cells in lockstep (the default); one cell
    at a time must give bitwise the same losses (fp32, one thread)."""
    import dataclasses

    from capgap.sweep.runner import lockstep_groups

    out, _ = finished_sweep
    grid_keys = list(by_key(out))
    assert sweep_cfg.lockstep
    alone = sweep_root / "alone"
    shutil.copytree(out / "teachers", alone / "teachers")
    cfg = dataclasses.replace(sweep_cfg, lockstep=False)
    summary = run_sweep(cfg, alone, workers=1, progress=False)
    assert summary.ran == 4 and summary.failed == 0
    one, two = by_key(out), by_key(alone)
    assert one.keys() == two.keys() == set(grid_keys)
    assert {k: r["val_loss"] for k, r in one.items()} == {k: r["val_loss"] for k, r in two.items()}
    rows = one.values()  # the grouping itself: one group per teacher, capped by lockstep_max
    grid = {r["key"]: types.SimpleNamespace(
        teacher=types.SimpleNamespace(path=r["teacher_path"], params=r["teacher_params"]),
        seed=r["seed"], tokens=r["tokens"]) for r in rows}
    groups = lockstep_groups(sweep_cfg, grid, list(grid))
    assert sorted(map(len, groups)) == [2, 2]
    first = [grid[g[0]].teacher.params for g in groups]
    assert first == sorted(first, reverse=True)  # the largest teacher's group starts first
    capped = dataclasses.replace(sweep_cfg, lockstep_max=1)
    assert sorted(map(len, lockstep_groups(capped, grid, list(grid)))) == [1, 1, 1, 1]
