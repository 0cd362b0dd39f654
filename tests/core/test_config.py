"""Config validation: unknown keys and wrong types are errors naming key and file."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from capgap import config
from capgap.errors import CapgapError


@dataclass
class Inner:
    lr: float = 1e-3
    mode: Literal["a", "b"] = "a"


@dataclass
class Outer:
    name: str = "x"
    steps: int = 10
    sizes: list[str] | None = None
    inner: Inner = field(default_factory=Inner)


def test_load_yaml_with_overrides(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("name: run\ninner:\n  lr: 2\n")
    cfg = config.load(Outer, f, ["steps=5", "inner.mode=b", "sizes=[T0, T1]"])
    assert cfg == Outer(name="run", steps=5, sizes=["T0", "T1"], inner=Inner(lr=2.0, mode="b"))
    assert isinstance(cfg.inner.lr, float)


def test_exponent_numbers_without_a_dot_are_numbers():
    # YAML 1.1 reads 2e6 as a string; the README and --help write budgets that way
    cfg = config.load(Outer, None, ["steps=2e6", "inner.lr=3e-4", "name=1e3"])
    assert cfg.steps == 2_000_000 and isinstance(cfg.steps, int)
    assert cfg.inner.lr == 3e-4 and cfg.name == "1e3"
    with pytest.raises(CapgapError, match="expected an integer, got 2.5"):
        config.load(Outer, None, ["steps=2.5e0"])


def test_unknown_key_names_key_file_and_suggestion(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("inner:\n  lrr: 1\n")
    with pytest.raises(CapgapError, match=r"c\.yaml\.inner: unknown key 'lrr' \(did you mean 'lr'\?\)"):
        config.load(Outer, f)


@pytest.mark.parametrize("text, match", [
    ("steps: 1.5\n", "steps: expected an integer"),
    ("steps: true\n", "steps: expected an integer"),
    ("inner: {mode: c}\n", "must be one of 'a', 'b'"),
    ("inner: 3\n", "inner: expected a mapping"),
    ("sizes: T0\n", "sizes: expected"),
])
def test_type_errors(tmp_path, text, match):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(CapgapError, match=match):
        config.load(Outer, f)


def test_malformed_and_missing_files(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(CapgapError, match="not valid YAML"):
        config.load(Outer, bad)
    with pytest.raises(CapgapError, match="config file not found"):
        config.load(Outer, tmp_path / "nope.yaml")


def test_dump_roundtrip(tmp_path):
    cfg = Outer(sizes=["a"], inner=Inner(lr=0.5, mode="b"))
    config.dump(cfg, tmp_path / "r.yaml")
    assert config.load(Outer, tmp_path / "r.yaml") == cfg


@dataclass
class WithFactory:
    inner: Inner = field(default_factory=lambda: Inner(lr=0.5, mode="b"))


def test_partial_section_keeps_the_fields_own_defaults(tmp_path):
    cfg = config.load(WithFactory, None, ["inner.mode=a"])
    assert cfg.inner == Inner(lr=0.5, mode="a")  # not Inner()'s lr=1e-3


@dataclass
class Paths:
    student: str = ""
    target: int | str = 0
    teacher: str | None = "t"
    extra: dict | None = None


def test_set_values_for_string_fields_stay_as_typed():
    cfg = config.load(Paths, None, ["student=runs/my run #2", "target=67000000",
                                    "teacher=null", "extra={a: 1}"])
    assert cfg.student == "runs/my run #2"
    assert cfg.target == 67_000_000 and cfg.teacher is None and cfg.extra == {"a": 1}
    cfg = config.load(Paths, None, ["student=on", "target=3B", "teacher='quoted'"])
    assert cfg.student == "on" and cfg.target == "3B" and cfg.teacher == "quoted"


def test_flag_values_are_never_reparsed():
    cfg = config.load(Paths, None, ["target=5"], values={"student": "on", "teacher": None})
    assert cfg.student == "on" and cfg.teacher == "t" and cfg.target == 5


def test_a_config_built_in_python_is_checked_like_a_file():
    with pytest.raises(CapgapError, match=r"Outer\.steps: expected an integer"):
        config.checked(Outer(steps="many"))
    with pytest.raises(CapgapError, match=r"mode: must be one of"):
        config.checked(Outer(inner=Inner(mode="c")))
    assert config.checked(Outer(steps=3)) == Outer(steps=3)


def test_python_built_sweep_config_is_validated_before_anything_runs(tmp_path):
    from capgap.sweep import SweepConfig, run_sweep
    from capgap.sweep.config import StudentsConfig, TeachersConfig

    cfg = SweepConfig(teachers=TeachersConfig(models=[str(tmp_path / "t")]),
                      students=StudentsConfig(sizes=[-1.0]))
    with pytest.raises(CapgapError, match="students.sizes must be positive"):
        run_sweep(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_stage_config_names_file_and_dotted_path(tmp_path):
    from capgap.sweep import SweepConfig

    f = tmp_path / "sweep.yaml"
    for text, match in [
        ("teachers: {pretrain: {train: {optim: {lrr: 1}}}}\n",
         r"sweep\.yaml\.teachers\.pretrain\.train\.optim: unknown key 'lrr' \(did you mean 'lr'\?\)"),
        ("train: {tokens: many}\n", r"sweep\.yaml\.train\.tokens: expected an integer, got 'many'"),
        ("students: {sizes: [3e5, big]}\n", r"sweep\.yaml\.students\.sizes\[1\]: expected a number"),
        ("objective: {divergence_kwargs: {beta: x}}\n",
         r"sweep\.yaml\.objective\.divergence_kwargs\.beta: expected a number"),
        ("baseline: 1\n", r"sweep\.yaml\.baseline: expected true or false, got 1"),
        ("train: {parallel: ray}\n", r"train\.parallel: must be one of 'ddp', 'fsdp', got 'ray'"),
        ("teachers: [a]\n", r"sweep\.yaml\.teachers: expected a mapping"),
    ]:
        f.write_text(text)
        with pytest.raises(CapgapError, match=match):
            config.load(SweepConfig, f)


@dataclass
class Choice:
    mode: Literal["a", "b"] | None = None


def test_a_union_field_is_reported_as_a_whole(tmp_path):
    with pytest.raises(CapgapError, match=r"config\.target: expected int \| str, got \[1\]"):
        config.from_dict(Paths, {"target": [1]})
    with pytest.raises(CapgapError, match=r"config\.mode: must be one of 'a', 'b', got 'c'"):
        config.from_dict(Choice, {"mode": "c"})


def test_numbers_in_a_file_are_typed_by_their_field(tmp_path):
    from capgap.sweep import SweepConfig

    f = tmp_path / "sweep.yaml"
    f.write_text("tokens: [2e6, 1.5e6]\nteachers: {models: [125000000, T1]}\n"
                 "train: {optim: {lr: 3e-4}}\nstudents: {sizes: [3e5]}\n")
    cfg = config.load(SweepConfig, f)
    assert cfg.tokens == [2_000_000, 1_500_000] and all(type(t) is int for t in cfg.tokens)
    assert cfg.teachers.models == ["125000000", "T1"]  # a name, though it spells a number
    assert cfg.train.optim.lr == 3e-4 and cfg.students.sizes == [300_000.0]


def test_a_python_built_stage_config_is_refused_with_its_path():
    from capgap.distill.engine import DistillConfig
    from capgap.train.loop import TrainConfig

    bad = DistillConfig(student="s", teacher="t", train=TrainConfig(tokens="many"))
    with pytest.raises(CapgapError, match=r"DistillConfig\.train\.tokens: expected an integer"):
        config.checked(bad)
    with pytest.raises(CapgapError, match="a teacher is required"):
        config.checked(DistillConfig(student="s"))  # each section's validate() runs too


def test_presets_are_importable_as_typed_configs():
    from capgap.sweep import SweepConfig

    cfg = config.preset("sweep", "ladder", ["seeds=[7]"])
    assert isinstance(cfg, SweepConfig) and cfg.seeds == [7]
    assert cfg.teachers.pretrain.family == "pythia-ladder"
    with pytest.raises(CapgapError, match="no sweep preset 'nope'; presets: .*ladder"):
        config.preset("sweep", "nope")
