"""The grid: size resolution, pairing only larger teachers, stable keys; config errors."""

from __future__ import annotations

import dataclasses

import pytest

from capgap import config
from capgap.cli import main
from capgap.errors import CapgapError
from capgap.sweep import SweepConfig
from capgap.sweep.grid import Teacher, build_grid, cell_key, resolve_targets, safe_name

T = [Teacher("S", "s", 1_000_000, 500_000, "s"), Teacher("L", "l", 2_000_000, 1_500_000, "l")]


def grid_cfg(**students) -> SweepConfig:
    return config.from_dict(SweepConfig, {"teachers": {"models": ["s", "l"]},
                                          "students": {"sizes": [4e5], **students},
                                          "tokens": [1000, 2000]})


def test_absolute_sizes_pair_only_larger_teachers():
    assert resolve_targets([4e5, 1.5e6], T) == {"S": [400_000], "L": [400_000, 1_500_000]}


def test_teacher_too_small_for_a_size_is_skipped_with_a_warning(capsys):
    cells = build_grid(grid_cfg(sizes=[4e5, 1.5e6]), T)
    assert {(c.teacher.name, c.student_target) for c in cells} == \
        {("S", 400_000), ("L", 400_000), ("L", 1_500_000)}
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["capgap sweep: warning: student size 1,500,000 skips teacher(s) S, "
                   "which are not larger than it"]


def test_fractions_within_one_percent_merge():
    t = [Teacher("a", "a", 1_000_000, 1, "a"), Teacher("b", "b", 1_005_000, 1, "b")]
    got = resolve_targets([0.5], t)
    assert got == {"a": [500_000], "b": [500_000]}  # 502,500 is within 1 % of 500,000


def test_grid_has_a_baseline_per_student_budget_and_seed():
    cells = build_grid(grid_cfg(), T)
    assert len(cells) == 2 * 2 * 2  # teachers x budgets x (soft_ce + baseline)
    base = [c for c in cells if c.is_baseline]
    assert {(c.teacher.name, c.tokens) for c in base} == {("S", 1000), ("S", 2000),
                                                          ("L", 1000), ("L", 2000)}


def test_keys_are_stable_and_change_with_the_setting():
    cfg = grid_cfg()
    cells = build_grid(cfg, T)
    keys = [cell_key(cfg, c) for c in cells]
    assert len(set(keys)) == len(keys)
    assert keys == [cell_key(grid_cfg(), c) for c in build_grid(grid_cfg(), T)]
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, micro_batch_size=7))
    assert cell_key(other, cells[0]) != keys[0]


def test_empty_grid_and_bad_choices_are_errors():
    with pytest.raises(CapgapError, match="grid is empty"):
        build_grid(grid_cfg(sizes=[5e6]), T)
    with pytest.raises(CapgapError, match="students.init"):
        grid_cfg(init=["random"])


def test_cli_bad_config_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("studnets: {sizes: [1]}\n")
    assert main(["sweep", "--config", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "studnets" in err and "students" in err and len(err.splitlines()) == 1


def test_ray_backend_missing_or_bad_is_clear():
    from capgap.sweep.backends import execute

    with pytest.raises(CapgapError, match="backend"):
        execute([{"key": "x"}], workers=1, backend="dask", on_start=print, on_result=print)


def test_same_init_control_cuts_every_student_from_one_teacher():
    from pathlib import Path

    from capgap.sweep.students import student_dir

    control = build_grid(grid_cfg(prune_from="S"), T)
    paper = build_grid(grid_cfg(), T)
    assert {c.teacher.name for c in control} == {"S", "L"}
    assert {c.pruned_from.name for c in control} == {"S"}
    assert {student_dir(Path("o"), c) for c in control} == {Path("o/students/S/400000-global")}
    keys = {cell_key(grid_cfg(), c) for c in paper}
    assert not keys & {cell_key(grid_cfg(prune_from="S"), c) for c in control}
    assert all(c.source is None for c in paper)
    with pytest.raises(CapgapError, match="no teacher named 'X'"):
        build_grid(grid_cfg(prune_from="X"), T)


def test_teacher_names_from_paths_and_hub_names():
    assert safe_name("EleutherAI/pythia-70m-deduped") == "pythia-70m-deduped"
    assert safe_name("runs/family/T1/") == "T1"
    assert [safe_name(f"runs/family/T{i}/model") for i in (1, 2)] == ["T1", "T2"]
    assert safe_name("my model (v2)") == "my_model_v2"


def test_watching_a_cell_in_tensorboard_keeps_its_key():
    on = config.from_dict(SweepConfig, {**config.to_dict(grid_cfg()),
                                        "train": {"tensorboard": True}})
    assert on.train.tensorboard
    assert [cell_key(on, c) for c in build_grid(on, T)] == \
        [cell_key(grid_cfg(), c) for c in build_grid(grid_cfg(), T)]
