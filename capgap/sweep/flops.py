"""The model FLOPs of a sweep cell, recorded in its row beside its result.

Three parts, each from the one per-token formula (:class:`capgap.models.arch.FlopShape`) at
the shapes the models really have (a global-allocation student layer by layer):

* teacher: its forward over the distillation tokens (0 for a no-teacher baseline). Each cell
  counts what it would cost alone; a lockstep group runs that forward once for all its
  members, which share teacher, seed and budget and so this figure.
* student: its training on the distillation tokens, 3 x its forward per token.
* prune: the scoring pass the student was cut with (expressiveness, the sweep's method: a
  forward and a backward to the masks, weights frozen) over the calibration tokens the
  scores record; computed once per teacher and shared by every student cut from it, counted
  whole in each cell. 0 for scratch students (their weights owe the teacher nothing).

Evaluation passes are not counted. Every figure is known before the cell runs.
"""

from __future__ import annotations

import json
from pathlib import Path

from capgap.evaluate.heldout import model_context
from capgap.models.anymodel import model_skeleton
from capgap.models.arch import FlopShape, flop_shape
from capgap.sweep.config import SweepConfig
from capgap.sweep.grid import CellSpec, Teacher
from capgap.sweep.students import scores_dir, scoring_seq_len, student_dir

FLOP_COLUMNS = ("teacher_flops", "student_flops", "prune_flops", "total_flops")


class CellFlops:
    """The FLOPs of the cells of one sweep folder; each model's shape is read once."""

    def __init__(self, cfg: SweepConfig, out: Path) -> None:
        self.cfg, self.out = cfg, out
        self._shapes: dict[str, tuple[FlopShape, int]] = {}

    def shape(self, path: str | Path) -> tuple[FlopShape, int]:
        """(FLOP shape, context length) of the model at ``path``."""
        key = str(path)
        if key not in self._shapes:
            model = model_skeleton(key)
            self._shapes[key] = (flop_shape(model), model_context(model))
        return self._shapes[key]

    def __call__(self, cell: CellSpec) -> dict[str, float | None]:
        """The row's FLOP columns for ``cell`` (its student must exist; prune and total
        are None when the scores it was cut with are gone)."""
        student, context = self.shape(student_dir(self.out, cell))
        seq_len = self.cfg.data.seq_len or context  # as the distillation runs it
        teacher = (0.0 if cell.is_baseline
                   else self.shape(cell.teacher.path)[0].forward_flops(seq_len) * cell.tokens)
        train = student.train_flops(seq_len) * cell.tokens
        prune = 0.0 if cell.init == "scratch" else self.scoring(cell.pruned_from)
        total = None if prune is None else teacher + train + prune
        return dict(zip(FLOP_COLUMNS, (teacher, train, prune, total), strict=True))

    def scoring(self, teacher: Teacher) -> float | None:
        """FLOPs of scoring ``teacher`` (module docstring), on the tokens its scores saw
        (None without its scores)."""
        path = scores_dir(self.out, teacher) / "scores.json"
        if not path.is_file():
            return None
        meta = json.loads(path.read_text("utf-8"))
        shape, context = self.shape(teacher.path)
        seq_len = scoring_seq_len(self.cfg, context)
        per_token = shape.forward_flops(seq_len) + shape.backward_flops(seq_len,
                                                                        weight_grads=False)
        return meta["calibration_tokens"] * per_token
