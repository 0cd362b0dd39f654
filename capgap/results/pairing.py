"""Each distilled cell beside its no-teacher baseline: the one pairing rule.

A baseline (alpha = 1) pairs with every distilled cell of its *student*: the same teacher
family, the same teacher it was cut from (its own unless a same-init control), size,
allocation, init, budget and seed, whichever teacher distils it. The gain (baseline loss
minus distilled loss) is the part of the result the teacher is responsible for: at small
budgets the pruning damage dominates the loss itself.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from capgap.results.optimum import best_index
from capgap.results.rows import CellRow, as_rows


def student_key(row: CellRow) -> tuple:
    """The student a row trained (see the module docstring): the key a baseline pairs on."""
    return (row.get("family"), row.cut_from, row.student_target, row.allocation, row.init,
            row.tokens, row.seed)


def baselines(rows: Iterable[CellRow]) -> dict[tuple, float]:
    """The finished baselines' losses by :func:`student_key`."""
    return {student_key(r): r.val_loss for r in rows if r.finished and not r.distilled}


def gain(row: CellRow, base: Mapping[tuple, float]) -> float | None:
    """Baseline loss minus ``row``'s loss, None without a baseline."""
    b = base.get(student_key(row))
    return None if b is None else b - row.val_loss


@dataclass(frozen=True)
class Paired:
    """A finished distilled cell with its baseline's loss and gain, and whether it is the
    best teacher of its size, setting and seed."""

    row: CellRow
    baseline_loss: float | None
    gain: float | None
    best: bool


def paired_rows(rows: Iterable[Mapping[str, Any]]) -> list[Paired]:
    """Every finished distilled row of ``rows`` beside its baseline (rows' order kept)."""
    done = [r for r in as_rows(rows) if r.finished]
    base = baselines(done)
    distilled = [r for r in done if r.distilled]
    best = _best_per_seed(distilled)
    return [Paired(r, base.get(student_key(r)), gain(r, base), id(r) in best)
            for r in distilled]


def _best_per_seed(rows: list[CellRow]) -> set[int]:
    """ids of the best teacher's row of each (size, objective, setting, seed)."""
    groups: dict[tuple, list[CellRow]] = {}
    for r in rows:
        key = (r.student_target, r.objective, r.allocation, r.init, r.tokens, r.seed)
        groups.setdefault(key, []).append(r)
    out = set()
    for group in groups.values():
        by_size = sorted(group, key=lambda r: r.teacher_params)
        out.add(id(by_size[best_index(r.val_loss for r in by_size)]))
    return out
