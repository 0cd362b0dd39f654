"""Every shipped preset loads as its stage's config; the pilot presets meet the grid the main
job promises.

The pilot's promise (>= 5 teachers; >= 3 student sizes, each with >= 3 larger
teachers; >= 2 seeds; global allocation; the paper's loss, with baselines) is checked on
the families' real sizes, counted on the meta device, so a change to a family or a preset
that breaks it fails here rather than in a user's report.
"""

from __future__ import annotations

import pytest
import torch

from capgap import config
from capgap.config import preset_names, preset_path
from capgap.models import build_model, count_params, load_family
from capgap.sweep import SweepConfig

PILOTS = ["pilot", "pilot-gpt2"]


def _family_sizes(family: str, vocab: int) -> list[int]:
    fam = load_family(family)
    with torch.device("meta"):
        return [count_params(build_model(fam.build_config(s.name, vocab_size=vocab))).total
                for s in fam.sizes]


MODELS = {"distill": ["student=s", "teacher=t"], "recipe": ["teacher=t"]}
"""What a stage's presets leave to the command line (the models), so their rules run too."""


@pytest.mark.parametrize("stage, name", [(stage, name) for stage in config.STAGE_CONFIGS
                                         for name in preset_names(stage)])
def test_every_shipped_preset_loads_as_its_stages_config(stage, name):
    cfg = config.preset(stage, name, MODELS.get(stage))
    assert type(cfg) is config.config_class(stage)
    if stage == "sweep":
        assert cfg.tokens and cfg.seeds and cfg.students.sizes


def test_every_stage_ships_presets():
    assert all(preset_names(stage) for stage in config.STAGE_CONFIGS)


@pytest.mark.parametrize("name", PILOTS)
def test_pilot_presets_are_a_real_experiment(name):
    assert name in preset_names("sweep")
    cfg = config.load(SweepConfig, preset_path("sweep", name))
    pre = cfg.teachers.pretrain
    teachers = _family_sizes(pre.family, pre.data.vocab_size)
    assert len(teachers) >= 5
    assert len(cfg.students.sizes) >= 3
    for size in cfg.students.sizes:
        assert sum(t > size for t in teachers) >= 3, (size, teachers)
    assert len(cfg.seeds) >= 2 and cfg.baseline
    assert cfg.students.allocations == ["global"] and cfg.students.init == ["pruned"]
    assert cfg.objectives == ["soft_ce"] and cfg.objective.alpha == 0.5


def test_the_study_preset_asks_every_question_of_the_study():
    """>= 5 pythia teachers; >= 3 sizes with >= 4 larger teachers each; >= 3 budgets up to
    >= 2M with >= 3 seeds at the largest (pooled over parts); baselines; the same-init control
    and scratch students at the largest budget; GPT-2; reverse KL and JSD with baselines at
    their budget."""
    from capgap.study.runner import StudyConfig

    study = config.load(StudyConfig, preset_path("study", "study"))
    parts = {name: study.sweep(name) for name in study.parts}
    own = [p for p in parts.values() if p.students.prune_from is None
           and p.students.init == ["pruned"] and p.objectives == ["soft_ce"]
           and p.teachers.pretrain.family == "pythia-micro"]
    budgets = sorted({t for p in own for t in p.tokens})
    top = budgets[-1]
    assert len(budgets) >= 3 and top >= 2_000_000
    assert len({s for p in own if top in p.tokens for s in p.seeds}) >= 3
    assert all(p.baseline for p in own)
    pre = own[0].teachers.pretrain
    teachers = _family_sizes(pre.family, pre.data.vocab_size)
    assert len(teachers) >= 5
    assert sorted(teachers) == teachers and len(own[0].students.sizes) >= 3
    for size in own[0].students.sizes:
        assert sum(t > size for t in teachers) >= 4, (size, teachers)
    control = [p for p in parts.values() if p.students.prune_from]
    assert control and all(top in p.tokens for p in control)
    scratch = [p for p in parts.values() if p.students.init == ["scratch"]]
    assert scratch and scratch[0].baseline and len(scratch[0].students.sizes) == 1
    assert any(p.teachers.pretrain.family == "gpt2-micro" for p in parts.values())
    objectives = [p for p in parts.values() if set(p.objectives) >= {"reverse_kl", "jsd"}]
    assert objectives and set(objectives[0].tokens) <= set(budgets)  # baselines ran there


def test_the_4m_extension_uses_the_study_teachers_and_settings():
    """study-4m reads the study's pretrained teachers by folder: a change to the study's
    family must move these paths too, and every setting but the budget must stay the study's
    so its losses compare with the study's 2M cells."""
    from capgap.study.runner import StudyConfig, family_key

    study = config.load(StudyConfig, preset_path("study", "study"))
    largest = study.sweep("largest")
    ext = config.load(SweepConfig, preset_path("sweep", "study-4m"))
    folder = f"results/study/teachers/{family_key(largest)}"
    assert ext.teachers.models and all(m.rsplit("/", 1)[0] == folder for m in ext.teachers.models)
    assert ext.tokens == [4_000_000] > largest.tokens
    assert set(ext.students.sizes) <= set(largest.students.sizes)
    for field in ("train", "eval", "scoring", "objective", "data", "baseline", "objectives"):
        assert getattr(ext, field) == getattr(largest, field), field


@pytest.mark.parametrize("name", ["ladder", "ladder-gpt2"])
def test_ladder_presets_are_a_measurable_regime(name):
    """Teachers trained on >= 10 tokens per parameter with embeddings <= 35 % of each; >= 7
    sizes spanning >= 8x in steps <= 1.5x; >= 4 student sizes, each with a teacher above it
    on both sides of 2.5x its size (an optimum at the paper's ratio lies inside the grid)."""
    from capgap.models.params import count_params_from_config

    cfg = config.load(SweepConfig, preset_path("sweep", name))
    pre = cfg.teachers.pretrain
    fam = load_family(pre.family)
    counts = [count_params_from_config(fam.build_config(s.name, vocab_size=pre.data.vocab_size))
              for s in fam.sizes]
    sizes = [c.total for c in counts]
    assert pre.tokens_per_param >= 10
    assert all(1 - c.non_embedding / c.total <= 0.35 for c in counts)
    assert len(sizes) >= 7 and sizes[-1] / sizes[0] >= 8
    assert all(1 < b / a <= 1.5 for a, b in zip(sizes, sizes[1:], strict=False))
    assert len(cfg.students.sizes) >= 4 and cfg.baseline and cfg.lockstep
    for s in cfg.students.sizes:
        larger = [t for t in sizes if t > s]
        assert min(larger) < 2.5 * s < max(larger), (s, larger)


def test_watching_the_teachers_pretraining_keeps_the_family_key():
    """train.tensorboard says how a run is watched, not what it trains: the study's teacher
    folders (named by the pretraining settings) stay where they are when it is on."""
    from dataclasses import replace

    from capgap.study.runner import StudyConfig, family_key

    sweep = config.load(StudyConfig, preset_path("study", "study")).sweep("largest")
    pre = sweep.teachers.pretrain
    watched = replace(sweep, teachers=replace(sweep.teachers, pretrain=replace(
        pre, train=replace(pre.train, tensorboard=True))))
    assert watched.teachers.pretrain.train.tensorboard
    assert family_key(watched) == family_key(sweep)
