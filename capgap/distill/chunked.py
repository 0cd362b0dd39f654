"""Memory-bounded distillation loss: no full-vocabulary logits tensor ever exists.

The student's LM head and the objective run chunk by chunk through the fused head loss of
:mod:`capgap.train.loss` (see there why and how). For each chunk of C rows the teacher's
[C, V] logits come from :class:`TeacherRows` — its own final hidden states and head (under
``no_grad``), or cached top-k rows (:class:`~capgap.distill.losses.TopKTeacher`) — are
scored by :class:`~capgap.distill.losses.KDObjective` and dropped before the next chunk, so
peak extra memory is a few [C, V] fp32 buffers plus one [V, H] weight gradient. Gemma's
final-logit soft-cap is applied to the teacher's chunks as to the student's.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from capgap.distill.losses import KDObjective, TopKTeacher, distill_loss_from_logits
from capgap.errors import CapgapError
from capgap.train.loss import (
    IGNORE_INDEX,
    LossOutput,
    capped,
    check_inputs,
    head_loss,
    hidden_states,
    lm_head,
    shift_and_flatten,
    softcap,
    valid_next_token_mask,
)


def check_shared_vocab(
    student: nn.Module,
    teacher: nn.Module,
    student_tokenizer: Any = None,
    teacher_tokenizer: Any = None,
) -> None:
    """Refuse teacher/student pairs that do not share a vocabulary.

    The LM heads must have the same number of rows (rows padded beyond the tokenizer included)
    and, when both tokenizers are given, their token -> id maps must be equal. Call it once at
    setup with the tokenizers; :func:`distill_loss` checks the head sizes on every call.
    """
    v_s, v_t = lm_head(student).out_features, lm_head(teacher).out_features
    if v_s != v_t:
        raise CapgapError(
            f"teacher and student must share a vocabulary: teacher LM head has {v_t} rows, "
            f"student {v_s}; prune the student from the teacher or use the same tokenizer"
        )
    for name, tok in (("student", student_tokenizer), ("teacher", teacher_tokenizer)):
        if tok is not None and len(tok) > v_s:
            raise CapgapError(f"{name} tokenizer has {len(tok)} tokens but the LM head only {v_s}")
    if student_tokenizer is not None and teacher_tokenizer is not None:
        vs, vt = student_tokenizer.get_vocab(), teacher_tokenizer.get_vocab()
        if vs != vt:
            diff = sorted(set(vs.items()) ^ set(vt.items()), key=lambda kv: kv[1])[:3]
            raise CapgapError(
                f"teacher and student tokenizers differ ({len(vt)} vs {len(vs)} tokens; e.g. "
                f"{diff}); distillation needs one shared vocabulary"
            )


class TeacherRows:
    """The teacher's side of one batch's loss: its capped logits, chunk by chunk.

    Built from the teacher body's flattened hidden rows [N, Ht] and its head, or from cached
    top-k rows (:class:`~capgap.distill.losses.TopKTeacher`). ``share=True`` keeps each
    chunk's logits once computed, so students trained in lockstep on the same batch (and the
    same chunk size) reuse them instead of running the teacher's head again; the values are
    the ones each student would compute itself. Memory: N x V of the logits' dtype.
    """

    def __init__(self, hidden: Tensor | None = None, head: nn.Linear | None = None,
                 cap: float | None = None, topk: TopKTeacher | None = None,
                 share: bool = False) -> None:
        self.hidden, self.cap, self.topk, self.share = hidden, cap, topk, share
        self.weight = None if head is None else head.weight.detach()
        self.bias = None if head is None or head.bias is None else head.bias.detach()
        self._chunks: dict[tuple[int, int], Tensor] = {}

    @torch.no_grad()
    def logits(self, rows: slice) -> Tensor | TopKTeacher:
        """The teacher's [C, V] logits of ``rows`` (or its top-k rows when cached)."""
        if self.topk is not None:
            return self.topk.rows(rows)
        key = (rows.start, rows.stop)
        if key in self._chunks:
            return self._chunks[key]
        out = capped(F.linear(self.hidden[rows], self.weight, self.bias), self.cap)  # [C, V]
        if self.share:
            self._chunks[key] = out
        return out


def _teacher_ready(student: nn.Module, teacher: nn.Module | None, alpha: float) -> nn.Module:
    if teacher is None:
        raise CapgapError(f"alpha={alpha} < 1 needs a teacher (alpha=1 is plain CE)")
    if teacher.training:
        raise CapgapError("the teacher must be frozen in eval mode: call teacher.eval() first")
    check_shared_vocab(student, teacher)
    return teacher


def _fused_loss(
    student: nn.Module,
    teacher: nn.Module | None,
    input_ids: Tensor,
    labels: Tensor | None,
    attention_mask: Tensor | None,
    objective: KDObjective,
    chunk_size: int,
    ignore_index: int,
    teacher_topk: TopKTeacher | None = None,
    teacher_rows: TeacherRows | None = None,
) -> LossOutput:
    labels = input_ids if labels is None else labels
    check_inputs(input_ids, labels, chunk_size)
    t_rows = teacher_rows
    if objective.needs_teacher and t_rows is None and teacher_topk is not None:
        valid = valid_next_token_mask(labels, attention_mask, ignore_index)  # [B, T-1]
        t_rows = TeacherRows(topk=teacher_topk.rows((slice(None), slice(0, -1))).rows(valid))
    elif objective.needs_teacher:
        teacher = _teacher_ready(student, teacher, objective.alpha)
    head = lm_head(student)
    rows, targets = shift_and_flatten(
        hidden_states(student, input_ids, attention_mask), labels, attention_mask, ignore_index
    )  # [N, H], [N]
    if objective.needs_teacher and t_rows is None:
        t_rows = teacher_rows_of(teacher, input_ids, labels, attention_mask, ignore_index)
    return head_loss(head, softcap(student), rows, targets, objective, chunk_size,
                     t_rows if objective.needs_teacher else None)


@torch.no_grad()
def teacher_rows_of(teacher: nn.Module, input_ids: Tensor, labels: Tensor | None = None,
                    attention_mask: Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                    share: bool = False) -> TeacherRows:
    """The frozen teacher's side of a batch's loss: its body run once on ``input_ids``
    ([B, T]), its hidden rows aligned with the student's targets. ``share``: keep the chunks'
    logits for other students of the same batch (see :class:`TeacherRows`)."""
    labels = input_ids if labels is None else labels
    hidden = hidden_states(teacher, input_ids, attention_mask)  # [B, T, Ht]
    flat, _ = shift_and_flatten(hidden, labels, attention_mask, ignore_index)  # [N, Ht]
    return TeacherRows(flat, lm_head(teacher), softcap(teacher), share=share)


def distill_loss(
    student: nn.Module,
    teacher: nn.Module | None,
    input_ids: Tensor,
    labels: Tensor | None = None,
    attention_mask: Tensor | None = None,
    alpha: float = 0.5,
    temperature: float = 1.0,
    divergence: str = "soft_ce",
    chunk_size: int = 1024,
    *,
    teacher_topk: TopKTeacher | None = None,
    teacher_rows: TeacherRows | None = None,
    scale_kd_by_t2: bool = True,
    ignore_index: int = IGNORE_INDEX,
    **div_kwargs: Any,
) -> LossOutput:
    """alpha * CE + (1 - alpha) * tau^2 * D(teacher || student), chunked over the vocabulary.

    input_ids / labels / attention_mask: [B, T]; ``labels`` defaults to ``input_ids`` (the shift
    to next-token targets happens inside; -100 marks ignored targets). The teacher must be in
    eval mode; it runs under ``no_grad`` and is not needed (nor run) when ``alpha == 1``.
    ``div_kwargs`` go to the divergence (e.g. ``beta`` for ``jsd``, ``skew`` for ``skew_*``).
    Equal, up to float rounding, to :func:`naive_distill_loss` in value and gradients.

    ``teacher_topk`` (fields [B, T, k] / [B, T], e.g. from :mod:`capgap.distill.cache`)
    replaces the teacher model: the divergence is then taken between the coarse-grained
    distributions of :func:`~capgap.distill.losses.coarse_grain`.

    ``teacher_rows``: the teacher's side computed once elsewhere
    (:func:`teacher_rows_of` with the same ``input_ids``, labels and mask), shared by students
    trained in lockstep; it replaces running the teacher here.
    """
    objective = KDObjective(alpha, temperature, divergence, dict(div_kwargs), scale_kd_by_t2)
    return _fused_loss(
        student, teacher, input_ids, labels, attention_mask, objective, chunk_size, ignore_index,
        teacher_topk, teacher_rows,
    )


def naive_distill_loss(
    student: nn.Module,
    teacher: nn.Module | None,
    input_ids: Tensor,
    labels: Tensor | None = None,
    attention_mask: Tensor | None = None,
    alpha: float = 0.5,
    temperature: float = 1.0,
    divergence: str = "soft_ce",
    *,
    scale_kd_by_t2: bool = True,
    ignore_index: int = IGNORE_INDEX,
    **div_kwargs: Any,
) -> LossOutput:
    """The straightforward version on both models' full [B, T, V] logits (reference, benchmark)."""
    objective = KDObjective(alpha, temperature, divergence, dict(div_kwargs), scale_kd_by_t2)
    labels = input_ids if labels is None else labels
    check_inputs(input_ids, labels, None)
    t_logits = None
    if objective.needs_teacher:
        teacher = _teacher_ready(student, teacher, alpha)
        with torch.no_grad():
            t_logits = teacher(
                input_ids=input_ids, attention_mask=attention_mask, use_cache=False
            ).logits  # [B, T, V]
    s_logits = student(
        input_ids=input_ids, attention_mask=attention_mask, use_cache=False
    ).logits  # [B, T, V]
    loss, ce, kd, n = distill_loss_from_logits(
        s_logits, t_logits, labels, attention_mask, objective, ignore_index
    )
    return LossOutput(loss, ce, kd, n)
