"""FLOPs the finished cells spent: each cell alone, and with what lockstep groups share."""

from __future__ import annotations

from capgap.results.accounting import flops_spent
from capgap.results.rows import CellRow


def _row(key: str, teacher: str, target: int, alpha: float, seed: int = 0,
         **flops: float | None) -> CellRow:
    parts = {"teacher_flops": 0.0 if alpha == 1 else {"T1": 10.0, "T2": 20.0}[teacher],
             "student_flops": 3.0 * target, "prune_flops": {"T1": 5.0, "T2": 7.0}[teacher]}
    parts |= flops
    total = None if None in parts.values() else sum(parts.values())
    return CellRow(key=key, status="done", teacher=teacher, student_target=target, alpha=alpha,
                   tokens=100, seed=seed, val_loss=3.0, total_flops=total, **parts)


def test_lockstep_slices_pay_the_teacher_once_and_teachers_are_scored_once():
    rows = [_row(f"{t}{s}{a}{seed}", t, s, a, seed) for t in ("T1", "T2") for s in (1, 2)
            for a in (0.5, 1.0) for seed in (0, 1)]
    spent = flops_spent(rows)
    assert spent["alone"] == sum(r.total_flops for r in rows)
    students = sum(r.student_flops for r in rows)
    # teacher forwards: one per (teacher, budget, seed) slice; scoring: one per teacher
    assert spent["shared"] == students + 2 * (10.0 + 20.0) + (5.0 + 7.0)
    assert spent["shared"] < spent["alone"]


def test_a_finished_cell_without_flops_makes_the_sum_unknown():
    rows = [_row("a", "T1", 1, 0.5), _row("b", "T1", 1, 1.0, prune_flops=None)]
    assert flops_spent(rows) is None
    assert flops_spent(rows[:1]) == {"alone": 10.0 + 3.0 + 5.0, "shared": 18.0}
    assert flops_spent([]) is None
