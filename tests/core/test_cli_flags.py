"""Flags reach the config as typed, --print-config shows it, and no flag is accepted unused."""

from __future__ import annotations

import pytest
import yaml

from capgap.cli import main


def test_distill_flags_keep_paths_and_strings_as_given(capsys):
    rc = main(["distill", "--student", "runs/my run #2", "--teacher", "on", "--tokens", "4e5",
               "--out", "unused", "--print-config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert rc == 0
    assert cfg["student"] == "runs/my run #2" and cfg["teacher"] == "on"
    assert cfg["train"]["tokens"] == 400_000


def test_set_wins_over_flags_and_stays_typed(capsys):
    rc = main(["distill", "--student", "a", "--set", "student=b #c", "--set", "train.optim.lr=2e-4",
               "--out", "unused", "--print-config"])
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert rc == 0 and cfg["student"] == "b #c" and cfg["train"]["optim"]["lr"] == 2e-4


@pytest.mark.parametrize("stage", [["pretrain"], ["sweep"], ["study"], ["pilot"],
                                   ["recipe", "minima"]])
def test_every_stage_with_a_config_prints_it(stage, capsys, tmp_path):
    argv = [*stage, "--print-config"] + (["--out", str(tmp_path / "o")]
                                         if stage[0] in ("pretrain", "sweep", "recipe") else [])
    if stage[0] == "recipe":
        argv += ["--teacher", "t", "--target-params", "3M"]
    rc = main(argv)
    out = capsys.readouterr().out
    assert rc == 0 and isinstance(yaml.safe_load(out), dict)
    assert not (tmp_path / "o").exists()


def test_sweep_has_no_resume_flag_it_would_ignore(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--resume", "--out", "x"])
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err
