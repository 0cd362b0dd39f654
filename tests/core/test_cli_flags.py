"""Flags reach the config as typed, --print-config shows it, and no flag is accepted unused."""

from __future__ import annotations

import dataclasses
import json

import pytest
import yaml

from capgap import config
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


STAGES = [(["pretrain"], "pretrain"), (["distill"], "distill"), (["sweep"], "sweep"),
          (["pilot"], "sweep"), (["study"], "study"), (["recipe", "minima"], "recipe")]
"""Every command that takes a config, and the stage whose config (and presets) it reads."""


@pytest.mark.parametrize("stage, _", STAGES)
def test_every_stage_with_a_config_prints_it_without_an_out_folder(stage, _, capsys, tmp_path):
    rc = main([*stage, "--print-config"])
    out = capsys.readouterr().out
    assert rc == 0 and isinstance(yaml.safe_load(out), dict)
    assert not (tmp_path / "o").exists()


def test_running_without_an_out_folder_is_a_one_line_error(capsys):
    assert main(["distill", "--student", "s", "--teacher", "t"]) == 2
    assert "--out is required" in capsys.readouterr().err


def _leaves(obj: object, prefix: str = ""):
    """(dotted key, default) of every non-section field of a config instance."""
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _leaves(value, f"{prefix}{f.name}.")
        else:
            yield prefix + f.name, value


@pytest.mark.parametrize("stage, config_stage", STAGES)
def test_every_stage_lists_its_config_keys_with_defaults(stage, config_stage, capsys):
    with pytest.raises(SystemExit) as e:
        main([*stage, "--help"])
    assert e.value.code == 0 and "--help-config" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        main([*stage, "--help-config"])
    out = capsys.readouterr().out
    assert e.value.code == 0
    lines = {ln.split(" (")[0].strip(): ln for ln in out.splitlines() if ln.startswith("  ") and
             not ln.startswith("      ")}
    leaves = list(_leaves(config.config_class(config_stage)()))
    assert leaves
    for key, value in leaves:
        assert key in lines, key
        if isinstance(value, bool):
            assert lines[key].endswith(f"= {str(value).lower()}"), lines[key]
        elif isinstance(value, (int, float, str)) and value != "":
            assert lines[key].endswith(f"= {value!r}" if isinstance(value, float)
                                       else f"= {value}"), lines[key]


def test_help_config_shows_the_enclosing_configs_defaults_and_the_docstrings(capsys):
    with pytest.raises(SystemExit):
        main(["pretrain", "--help-config"])
    out = capsys.readouterr().out
    assert "  train.optim.lr (float) = 0.001\n" in out  # pretraining's, not OptimConfig()'s 3e-4
    assert "  train.parallel (ddp|fsdp) = ddp\n      Under torchrun" in out
    with pytest.raises(SystemExit):
        main(["sweep", "--help-config"])
    out = capsys.readouterr().out
    assert "  teachers.pretrain.family (str) = pythia-micro\n" in out  # inside a null section
    assert "At most this many students per lockstep group (0: no limit); caps memory." in out


def test_presets_lists_every_shipped_preset_with_its_first_comment(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    for stage in config.STAGE_CONFIGS:
        assert f"\n{stage} (--preset NAME of " in f"\n{out}"
        for name in config.preset_names(stage):
            first = config.preset_path(stage, name).read_text().splitlines()[0].lstrip("# ")
            assert f"  {name}  " in out and first in out, (stage, name)
    assert main(["presets", "sweep", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert list(listed) == ["sweep"] and sorted(listed["sweep"]) == config.preset_names("sweep")


def test_sweep_has_no_resume_flag_it_would_ignore(capsys):
    with pytest.raises(SystemExit) as e:
        main(["sweep", "--resume", "--out", "x"])
    assert e.value.code == 2 and "--resume" in capsys.readouterr().err
