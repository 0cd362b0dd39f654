"""Each cell's FLOPs: recorded in its row, equal to what torch's FlopCounterMode counts on the
cell's own models (its per-layer pruned student included), zero teacher FLOPs for baselines."""

from __future__ import annotations

from torch.utils.flop_counter import FlopCounterMode

from capgap.evaluate.heldout import model_context
from capgap.models.anymodel import load_any_model
from capgap.plan.estimate import measured_flops
from capgap.prune import score
from capgap.sweep import read_rows
from capgap.sweep.students import calibration_batches


def _eager(path: str):  # noqa: ANN202 - (model, tokenizer)
    """The model at ``path`` with eager attention: FlopCounterMode does not see the CPU SDPA
    kernel, only plain matmuls."""
    model, tokenizer = load_any_model(path)
    model.set_attn_implementation("eager")
    return model.eval(), tokenizer


def test_each_part_is_what_torch_counts(finished_sweep, sweep_cfg):
    out, _ = finished_sweep
    row = next(r for r in read_rows(out) if r.teacher == "B" and r.distilled)
    teacher, tokenizer = _eager(row.teacher_path)
    student, _ = _eager(row.student_path)
    assert getattr(student, "capgap_pruning", {}).get("allocation") == "global"
    seq = model_context(student)  # data.seq_len is 0: the student's context
    assert row.teacher_flops == measured_flops(teacher, 1, seq, train=False) / seq * row.tokens
    assert row.student_flops == measured_flops(student, 1, seq, train=True) / seq * row.tokens
    batches = calibration_batches(sweep_cfg, teacher, tokenizer)
    with FlopCounterMode(display=False) as counter:
        score(teacher, batches, tokens=sweep_cfg.scoring.tokens)
    assert row.prune_flops == counter.get_total_flops()
    assert row.total_flops == row.teacher_flops + row.student_flops + row.prune_flops


def test_flops_grow_with_the_teacher_and_baselines_have_none(finished_sweep):
    out, _ = finished_sweep
    rows = read_rows(out)
    assert all(r[c] is not None and r[c] >= 0 for r in rows
               for c in ("teacher_flops", "student_flops", "prune_flops", "total_flops"))
    cells = {(r.teacher, r.distilled): r for r in rows}
    for t in ("A", "B"):
        base, dist = cells[t, False], cells[t, True]
        assert base.teacher_flops == 0 and dist.teacher_flops > 0
        # the same student, cut from the same scores: only the teacher's forward differs
        assert (base.student_flops, base.prune_flops) == (dist.student_flops, dist.prune_flops)
        assert dist.total_flops - base.total_flops == dist.teacher_flops
    assert cells["B", True].teacher_flops > cells["A", True].teacher_flops
    assert cells["B", True].prune_flops > cells["A", True].prune_flops  # scoring a bigger model
