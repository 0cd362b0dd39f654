"""One sweep cell as a typed row: the columns of the ``cells`` table, defined once.

:class:`CellRow` is the schema (the store's SQL columns are derived from its fields) and
what every reader returns; :class:`PartRow` adds what a study knows about a row (its part,
its teacher family, where its student was cut from). Both are also read-only mappings, so
code that reads a table generically (the law's sources, CSV, ``--where`` filters) takes
them like the dicts of a CSV file.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any


def _col(sql: str, doc: str) -> Any:
    """A column: its SQL type and meaning ride on the field (the schema is documented here)."""
    return field(default=None, metadata={"sql": sql, "doc": doc})


@dataclass(frozen=True)
class CellRow(Mapping[str, Any]):
    """One row of a sweep's ``cells`` table (a database row has every key; hand-made rows
    may leave out what they do not need)."""

    key: str = field(default="", metadata={"sql": "TEXT PRIMARY KEY",
                               "doc": "hash of the resolved cell config; cells/<key>/ is its run"})
    status: str = field(default="pending", metadata={"sql": "TEXT NOT NULL",
                                                      "doc": "pending | running | done | failed"})
    teacher: str | None = _col("TEXT", "teacher name (family size or folder name)")
    teacher_params: int | None = _col("INTEGER", "teacher total parameters")
    teacher_params_ne: int | None = _col("INTEGER", "teacher non-embedding parameters")
    student_target: int | None = _col("INTEGER",
                                      "requested student size (total params); the size group")
    student_params: int | None = _col("INTEGER", "student total parameters after pruning")
    student_params_ne: int | None = _col("INTEGER", "student non-embedding parameters")
    sparsity: float | None = _col("REAL", "1 - student_params / params of the teacher it was "
                                          "pruned from")
    objective: str | None = _col("TEXT", "divergence name, or 'ce' for the alpha = 1 baseline")
    alpha: float | None = _col("REAL", "weight of CE on labels (1 = no teacher)")
    allocation: str | None = _col("TEXT", "global | uniform pruning allocation")
    init: str | None = _col("TEXT", "pruned | scratch student initialisation")
    tokens: int | None = _col("INTEGER", "distillation token budget")
    seed: int | None = _col("INTEGER", "training seed (data order; init for scratch students)")
    val_loss: float | None = _col("REAL", "held-out loss (nats/token) of the trained student")
    val_ppl: float | None = _col("REAL", "held-out perplexity")
    val_bpb: float | None = _col("REAL", "held-out bits per byte (tokenizer-independent)")
    tokens_per_s: float | None = _col("REAL", "training throughput")
    prune_s: float | None = _col("REAL", "seconds to make the student (shared by the cells "
                                         "using it)")
    distill_s: float | None = _col("REAL", "seconds of this cell's training + evaluation (a "
                                            "lockstep group's, shared by budget)")
    teacher_path: str | None = _col("TEXT", "teacher model folder or hub name")
    teacher_loss: float | None = _col("REAL", "the teacher's held-out loss on the text and "
                                      "settings its students are scored with")
    student_path: str | None = _col("TEXT", "student init folder (students/...)")
    cell_dir: str | None = _col("TEXT", "the cell's distill run folder")
    model_dir: str | None = _col("TEXT", "the trained student's model folder")
    error: str | None = _col("TEXT", "last error of a failed cell")
    attempts: int | None = _col("INTEGER", "times the cell was started")
    updated: str | None = _col("TEXT", "last status change (local time)")
    task: str | None = _col("TEXT", "the worker task that ran the cell (a lockstep group's "
                            "members share one and split its time)")
    pruned_from: str | None = _col("TEXT", "teacher the student was cut from (its own, or the "
                                           "same-init control's students.prune_from)")
    teacher_flops: float | None = _col("REAL", "model FLOPs of the teacher's forward over the "
                                        "distillation tokens (0 for a baseline), as if run "
                                        "alone: a lockstep group pays it once for all members")
    student_flops: float | None = _col("REAL", "model FLOPs of the student's training "
                                        "(3 x its forward) over the distillation tokens")
    prune_flops: float | None = _col("REAL", "model FLOPs of scoring the teacher the student was "
                                      "cut from (shared by its students; 0 for scratch init)")
    total_flops: float | None = _col("REAL", "teacher_flops + student_flops + prune_flops (None "
                                      "when unknown: rows recorded before FLOPs were)")

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> CellRow:
        """The row of a mapping (a database row, a CSV or hand-made dict); other keys are
        ignored."""
        if isinstance(row, cls):
            return row
        return cls(**{f.name: row[f.name] for f in fields(cls) if f.name in row})

    def columns(self) -> dict[str, Any]:
        """The ``cells`` columns of this row (a :class:`PartRow`'s study tags left out)."""
        return {name: getattr(self, name) for name in _NAMES[CellRow]}

    @property
    def distilled(self) -> bool:
        """Trained with a teacher (alpha < 1); alpha = 1 is the no-teacher baseline."""
        return (self.alpha or 0) < 1

    @property
    def finished(self) -> bool:
        """Done, with a held-out loss."""
        return self.status == "done" and self.val_loss is not None

    @property
    def cut_from(self) -> str | None:
        """The teacher the student was pruned from: its own unless a same-init control."""
        return self.pruned_from or self.teacher

    def __getitem__(self, name: str) -> Any:
        if name not in _NAMES.get(type(self), ()):
            raise KeyError(name)
        return getattr(self, name)

    def __iter__(self) -> Iterator[str]:
        return iter(_NAMES[type(self)])

    def __len__(self) -> int:
        return len(_NAMES[type(self)])


@dataclass(frozen=True)
class PartRow(CellRow):
    """A finished row of one part of a study, with what the study knows about it."""

    part: str = ""
    family: str = ""
    source: str = "own"
    """``own`` (the student was cut from its teacher) or ``from T`` (cut from T)."""


_NAMES: dict[type, tuple[str, ...]] = {c: tuple(f.name for f in fields(c))
                                       for c in (CellRow, PartRow)}

COLUMNS: list[tuple[str, str, str]] = [(f.name, f.metadata["sql"], f.metadata["doc"])
                                       for f in fields(CellRow)]
"""(column, SQL type, meaning) of the ``cells`` table, in order."""


def as_rows(rows: Iterable[Mapping[str, Any]]) -> list[CellRow]:
    """``rows`` as :class:`CellRow` (those already typed kept as they are)."""
    return [r if isinstance(r, CellRow) else CellRow.from_mapping(r) for r in rows]
