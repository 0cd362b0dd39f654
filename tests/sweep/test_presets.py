"""Every shipped sweep preset loads; the pilot presets meet the grid the main job promises.

The pilot's promise (issue: >= 5 teachers; >= 3 student sizes, each with >= 3 larger
teachers; >= 2 seeds; global allocation; the paper's loss, with baselines) is checked on
the families' real sizes, counted on the meta device, so a change to a family or a preset
that breaks it fails here rather than in a user's report.
"""

from __future__ import annotations

import pytest
import torch

from capgap import config
from capgap.cli.common import preset_names, preset_path
from capgap.models import build_model, count_params, load_family
from capgap.sweep import SweepConfig

PILOTS = ["pilot", "pilot-gpt2"]


def _family_sizes(family: str, vocab: int) -> list[int]:
    fam = load_family(family)
    with torch.device("meta"):
        return [count_params(build_model(fam.build_config(s.name, vocab_size=vocab))).total
                for s in fam.sizes]


@pytest.mark.parametrize("name", preset_names("sweep"))
def test_every_sweep_preset_loads(name):
    cfg = config.load(SweepConfig, preset_path("sweep", name))
    assert cfg.tokens and cfg.seeds and cfg.students.sizes


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
