"""The teacher × student grid: which cells a sweep config asks for, each with a stable key.

Pure functions over the config and the teachers' sizes (no torch): the grid can be listed,
tested and resumed without loading a model. A cell's key is a hash of everything that
changes its result, so re-running a sweep finds the cells it already finished.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from capgap import config as cfgmod
from capgap.errors import CapgapError
from capgap.sweep.config import SweepConfig
from capgap.train.loop import result_settings

SIZE_TOLERANCE = 0.01  # targets within 1 % of each other are one student size
BASELINE = "ce"  # the objective column of a no-teacher (alpha = 1) baseline


@dataclass(frozen=True)
class Teacher:
    """A resolved teacher: a short name, where its model lives, and its size."""

    name: str
    path: str
    params: int
    params_ne: int
    source: str
    """What the teacher is, independent of where the sweep folder lives (for cell keys):
    ``family:<family>/<size>`` for a pretrained one, else the path or hub name given."""
    loss: float | None = None
    """Held-out loss on the text its students are scored on (:func:`~capgap.sweep.students.
    score_teachers`); not part of any cell key."""


@dataclass(frozen=True)
class CellSpec:
    """One cell: a student of ``student_target`` params pruned from ``teacher``, trained with
    ``objective`` (``ce`` with alpha 1 for the baseline) on ``tokens`` tokens."""

    teacher: Teacher
    student_target: int
    allocation: str
    init: str
    objective: str
    alpha: float
    tokens: int
    seed: int
    source: Teacher | None = None
    """The teacher the student is pruned from when it is not ``teacher`` (the same-init
    control, ``students.prune_from``); None: its own teacher, as in the paper."""

    @property
    def is_baseline(self) -> bool:
        return self.alpha >= 1.0

    @property
    def pruned_from(self) -> Teacher:
        return self.source or self.teacher

    def student_name(self) -> str:
        """Folder name of this cell's student under ``students/<teacher>/``."""
        base = f"{self.student_target}-{self.allocation}"
        return base if self.init == "pruned" else f"{base}-scratch-seed{self.seed}"

    def label(self) -> str:
        return (f"{self.teacher.name} -> {self.student_target / 1e6:.3g}M {self.allocation} "
                f"{self.init} {self.objective} {self.tokens} tok seed {self.seed}")


def safe_name(text: str) -> str:
    """A folder-safe name for a teacher path or hub name: its last part, or the run folder's
    name for a capgap run's ``RUN/model`` (so ``fam/T1/model`` and ``fam/T2/model`` differ)."""
    path = Path(str(text).rstrip("/"))
    if path.name == "model" and path.parent.name:
        path = path.parent
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", path.name or str(text))
    return name.strip("._") or "teacher"


def resolve_targets(sizes: list[float], teachers: list[Teacher]) -> dict[str, list[int]]:
    """Target student sizes per teacher, only those smaller than the teacher.

    Absolute sizes (>= 1) are the same for every teacher. Fractions (< 1) give one target
    per teacher; targets within 1 % of each other (from different teachers or fractions) are
    merged into one size, the smallest of the group, so they share a ``student_target``.
    """
    raw = sorted({int(round(s)) for s in sizes if s >= 1}
                 | {int(round(s * t.params)) for s in sizes if s < 1 for t in teachers})
    groups: list[int] = []
    for target in raw:
        if not groups or target > groups[-1] * (1 + SIZE_TOLERANCE):
            groups.append(target)
    return {t.name: [g for g in groups if _pairs(g, t, sizes)] for t in teachers}


def _pairs(target: int, teacher: Teacher, sizes: list[float]) -> bool:
    """Only teachers larger than the student; a fraction-only grid pairs each teacher with
    the targets its own fractions produced (not every teacher's)."""
    if target >= teacher.params:
        return False
    absolute = {int(round(s)) for s in sizes if s >= 1}
    own = [s * teacher.params for s in sizes if s < 1]
    near = any(abs(target - o) <= SIZE_TOLERANCE * max(target, o) for o in own)
    return target in absolute or near


def build_grid(cfg: SweepConfig, teachers: list[Teacher]) -> list[CellSpec]:
    """Every cell of the sweep, baselines included, in a stable order."""
    names = [t.name for t in teachers]
    if len(set(names)) != len(names):
        raise CapgapError(f"teacher names must be distinct, got {names}")
    source = _source(cfg, teachers)
    targets = resolve_targets(cfg.students.sizes, [source] if source else teachers)
    if source is not None:  # one initialisation for every teacher larger than the student
        targets = {t.name: [g for g in targets[source.name] if g < t.params] for t in teachers}
    kinds = [(o, cfg.objective.alpha) for o in cfg.objectives]
    if cfg.baseline:
        kinds.append((BASELINE, 1.0))
    cells = [
        CellSpec(t, target, alloc, init, objective, alpha, tokens, seed, source)
        for t in teachers
        for target in targets[t.name]
        for alloc in cfg.students.allocations
        for init in cfg.students.init
        for tokens in cfg.tokens
        for seed in cfg.seeds
        for objective, alpha in kinds
    ]
    if not cells:
        sizes = ", ".join(f"{t.name} {t.params:,}" for t in teachers)
        raise CapgapError(f"the grid is empty: no teacher is larger than any student size "
                          f"(teachers: {sizes}; students.sizes: {cfg.students.sizes})")
    for line in skipped_pairs(cfg.students.sizes, teachers):
        print(f"capgap sweep: warning: {line}", file=sys.stderr)
    return cells


def _source(cfg: SweepConfig, teachers: list[Teacher]) -> Teacher | None:
    """The teacher named by ``students.prune_from`` (None when unset)."""
    name = cfg.students.prune_from
    if name is None:
        return None
    found = [t for t in teachers if t.name == name]
    if not found:
        raise CapgapError(f"students.prune_from: no teacher named {name!r} "
                          f"(teachers: {', '.join(t.name for t in teachers)})")
    return found[0]


def skipped_pairs(sizes: list[float], teachers: list[Teacher]) -> list[str]:
    """One line per absolute student size that some teacher is too small to be pruned to
    (those cells are left out: a student is cut from its own, larger teacher)."""
    out = []
    for size in sorted({int(round(s)) for s in sizes if s >= 1}):
        small = [t.name for t in teachers if t.params <= size]
        if small:
            out.append(f"student size {size:,} skips teacher(s) {', '.join(small)}, "
                       "which are not larger than it")
    return out


def _ident(t: Teacher) -> dict[str, Any]:
    return {"name": t.name, "source": t.source, "params": t.params}


def distill_settings(cfg: SweepConfig, cell: CellSpec) -> dict[str, Any]:
    """The distillation settings of ``cell`` (everything but the student/teacher paths)."""
    objective = {**cfgmod.to_dict(cfg.objective), "alpha": cell.alpha,
                 "divergence": cell.objective if not cell.is_baseline else cfg.objective.divergence}
    train = {**cfgmod.to_dict(cfg.train), "tokens": cell.tokens, "seed": cell.seed}
    return {"teacher_dtype": cfg.teacher_dtype, "data": cfgmod.to_dict(cfg.data),
            "objective": objective, "train": train, "eval": cfgmod.to_dict(cfg.eval)}


def cell_key(cfg: SweepConfig, cell: CellSpec) -> str:
    """A hash of everything that decides the cell's result (16 hex digits)."""
    ident = {k: v for k, v in asdict(cell).items() if k not in ("teacher", "source")}
    ident["teacher"] = _ident(cell.teacher)
    if cell.source is not None:  # absent otherwise, so the paper's cells keep their keys
        ident["pruned_from"] = _ident(cell.source)
    distill = distill_settings(cfg, cell)
    distill["train"] = result_settings(distill["train"])
    payload = {"cell": ident, "distill": distill, "scoring": cfgmod.to_dict(cfg.scoring)}
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
