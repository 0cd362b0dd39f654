"""The sweep's config: which teachers, which student sizes, and the settings every cell varies.

One YAML file describes the whole teacher × student grid. Everything a cell shares with its
neighbours (optimiser, eval, data) is written once; the lists (``objectives``, ``tokens``,
``seeds``, ``students.sizes`` ...) span the grid.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from capgap.distill.engine import DistillDataConfig, ObjectiveConfig
from capgap.distill.losses import get_divergence
from capgap.errors import CapgapError
from capgap.evaluate.heldout import EvalConfig
from capgap.prune.methods import ALLOCATIONS
from capgap.results.adaptive import AdaptiveConfig
from capgap.results.defaults import LAW_BOOTSTRAP
from capgap.train.loop import OptimConfig, TrainConfig
from capgap.train.pretrain import PretrainConfig

INITS = ("pruned", "scratch")


@dataclass
class TeachersConfig:
    """Either a family to pretrain into ``DIR/teachers`` or existing models (or both)."""

    pretrain: PretrainConfig | None = None
    """A family to pretrain (the ``capgap pretrain`` config); resumed if already there."""
    models: list[str] = field(default_factory=list)
    """Local model folders, run folders or hub names."""

    def validate(self) -> None:
        if self.pretrain is None and not self.models:
            raise CapgapError("teachers: give a family to pretrain (teachers.pretrain) "
                              "or a list of models (teachers.models)")


@dataclass
class StudentsConfig:
    """Target student sizes and how each student is made from its teacher."""

    sizes: list[float] = field(default_factory=list)
    """Absolute parameter counts (>= 1, e.g. 3e5) or fractions of each teacher (< 1)."""
    allocations: list[str] = field(default_factory=lambda: ["global"])
    """How pruning spreads the cut: global (paper's pilot) and/or uniform."""
    init: list[str] = field(default_factory=lambda: ["pruned"])
    """pruned (the paper) and/or scratch (same shape as the pruned student, re-initialised)."""
    size_unit: str = "total"
    """Unit of absolute sizes: total parameters (the only unit pruning targets)."""
    prune_from: str | None = None
    """The same-init control: cut every student from this one teacher (by name, e.g. T0)
    and distil that same initialisation from every teacher, instead of pruning each
    student from its own teacher (the paper). Separates the damage of heavier pruning from
    the teacher's own effect."""

    def validate(self) -> None:
        if not self.sizes:
            raise CapgapError("students.sizes: give at least one size (e.g. [3e5, 5e5] or [0.4])")
        if any(s <= 0 for s in self.sizes):
            raise CapgapError(f"students.sizes must be positive, got {self.sizes}")
        _check_choices("students.allocations", self.allocations, ALLOCATIONS)
        _check_choices("students.init", self.init, INITS)
        if self.size_unit != "total":
            raise CapgapError("students.size_unit: only 'total' is supported (pruning targets it)")


@dataclass
class ScoringConfig:
    """Calibration for the expressiveness scores (computed once per teacher)."""

    tokens: int = 65_536
    batch_size: int = 16
    seq_len: int = 0
    """0: the teacher's context (at most 1024)."""
    seed: int = 0


def _default_train() -> TrainConfig:
    return TrainConfig(tokens=150_000, micro_batch_size=32,
                       optim=OptimConfig(lr=3e-4, beta1=0.9, beta2=0.95, weight_decay=0.1,
                                         warmup_frac=0.01, grad_clip=1.0))


@dataclass
class SweepConfig:
    """``capgap sweep``: the grid and the settings shared by every cell."""

    teachers: TeachersConfig = field(default_factory=TeachersConfig)
    students: StudentsConfig = field(default_factory=StudentsConfig)
    objectives: list[str] = field(default_factory=lambda: ["soft_ce"])
    """Divergence names (capgap.distill.losses); each is one distilled cell per pair."""
    tokens: list[int] = field(default_factory=lambda: [150_000])
    """Distillation token budgets."""
    seeds: list[int] = field(default_factory=lambda: [0])
    baseline: bool = True
    """Also train every student with alpha = 1 (no teacher) on the same tokens."""
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    """Shared objective settings (alpha, temperature ...); divergence comes from objectives."""
    train: TrainConfig = field(default_factory=_default_train)
    """Shared training settings; tokens and seed come from the grid."""
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    teacher_dtype: str = "auto"
    law_bootstrap: int = LAW_BOOTSTRAP
    """Bootstrap resamples of the law fitted at the end."""
    workers: int = 1
    """Processes for teacher pretraining and cells (``--workers`` overrides); each gets
    cores / workers torch threads."""
    lockstep: bool = True
    """Train the cells that share a teacher, seed and budget together in one worker: one
    teacher forward per batch for all of them (results equal to one-by-one runs in fp32)."""
    lockstep_max: int = 0
    """At most this many students per lockstep group (0: no limit); caps memory."""
    lockstep_budgets: bool = True
    """Let cells of different budgets share a lockstep group: a smaller budget reads a prefix
    of the larger one's batches, so the teacher runs once for both (results still equal to
    one-by-one runs). Off: one group per budget, so whole (seed, budget) slices finish first."""
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    """Run only the cells that narrow each student size's best teacher, in rounds, instead
    of the full grid (off by default; the rule: :mod:`capgap.results.adaptive`)."""

    def validate(self) -> None:
        if not self.objectives:
            raise CapgapError("objectives: give at least one divergence (e.g. [soft_ce])")
        for name in self.objectives:
            get_divergence(name)
        if not self.tokens or any(t <= 0 for t in self.tokens):
            raise CapgapError(f"tokens: give positive token budgets, got {self.tokens}")
        if not self.seeds:
            raise CapgapError("seeds: give at least one seed")
        if self.workers < 1:
            raise CapgapError(f"workers must be at least 1, got {self.workers}")
        if self.lockstep_max < 0:
            raise CapgapError(f"lockstep_max must be >= 0, got {self.lockstep_max}")
        if self.objective.alpha >= 1:
            raise CapgapError("objective.alpha must be < 1 for distilled cells "
                              "(baselines with alpha = 1 are added by baseline: true)")


def _check_choices(where: str, values: list[str], choices: tuple[str, ...]) -> None:
    if not values:
        raise CapgapError(f"{where}: give at least one of {', '.join(choices)}")
    bad = [v for v in values if v not in choices]
    if bad:
        raise CapgapError(f"{where}: unknown {bad[0]!r}; choose from {', '.join(choices)}")
