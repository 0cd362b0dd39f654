"""Memory-bounded distillation loss: no full-vocabulary logits tensor ever exists.

A stock forward builds [B, T, V] logits for both models (V = 50k makes them the largest
tensors of a small-model step), and chunking only the loss saves nothing because autograd keeps
every chunk. Instead we run the models' *bodies* (final hidden state, after the final norm) and
fuse the LM heads with the loss: for each chunk of C rows, :class:`_FusedHeadLoss` computes both
heads' [C, V] logits, the loss of the chunk and at once its gradient w.r.t. the student's hidden
chunk and head weight (+ bias), keeps only those gradients, and drops the logits. Backward just
scales the stored gradients (the Liger / torchtune chunked-CE idea, fused with the teacher).
Peak extra memory is a few [C, V] fp32 buffers plus one [V, H] weight gradient.

The body is ``model.get_decoder()`` (transformers 5; else ``model.base_model``): GPT-2's
``transformer``, GPT-NeoX's ``gpt_neox``, LLaMA's ``model``. Its ``last_hidden_state`` is taken
after the final norm (``ln_f`` / ``final_layer_norm`` / ``norm``), which is exactly what the
model feeds its LM head (``model.get_output_embeddings()``). Gemma's final-logit soft-capping
(``cap * tanh(logits / cap)``) is applied to each chunk, as the model does; other logit
post-processing (Cohere's, Granite's scaling) is refused rather than silently given a
different loss.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from capgap.distill.losses import (
    IGNORE_INDEX,
    KDObjective,
    TopKTeacher,
    distill_loss_from_logits,
    shift_and_flatten,
    valid_next_token_mask,
)
from capgap.errors import CapgapError

# Config attributes by which some HF families transform logits after the head, with the
# values meaning "no transform". body + head would silently differ from model.logits.
_LOGIT_TRANSFORMS: dict[str, tuple[Any, ...]] = {
    "logit_scale": (None, 1, 1.0),  # Cohere
    "logits_scaling": (None, 1, 1.0),  # Granite
}


class LossOutput(NamedTuple):
    """One step's loss and its parts (parts detached, for logging)."""

    loss: Tensor  # scalar; differentiable w.r.t. the student
    ce: Tensor  # mean CE to the labels over valid tokens
    kd: Tensor | None  # mean (temperature-scaled) divergence; None when no teacher was run
    n_tokens: int  # valid predicted tokens (the normaliser)


def lm_head(model: nn.Module) -> nn.Linear:
    """The model's LM head (a plain ``nn.Linear``), or a :class:`CapgapError`."""
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if not isinstance(head, nn.Linear):
        raise CapgapError(
            f"{type(model).__name__} has no linear LM head (get_output_embeddings() -> "
            f"{type(head).__name__}); pass a causal LM such as GPT2LMHeadModel or LlamaForCausalLM"
        )
    return head


def softcap(model: nn.Module) -> float | None:
    """The model's final-logit soft-cap (Gemma 2/3), or None for a plain head."""
    return getattr(getattr(model, "config", None), "final_logit_softcapping", None)


def capped(logits: Tensor, cap: float | None) -> Tensor:
    """``cap * tanh(logits / cap)`` as Gemma applies it after the head; identity for None."""
    return logits if cap is None else torch.tanh(logits / cap) * cap


def decoder_body(model: nn.Module) -> nn.Module:
    """The module producing the final (post-norm) hidden states without the LM head."""
    cfg = getattr(model, "config", None)
    for attr, trivial in _LOGIT_TRANSFORMS.items():
        value = getattr(cfg, attr, None)
        if value not in trivial:
            raise CapgapError(
                f"{type(model).__name__} applies config.{attr}={value} to its logits; the "
                "chunked loss supports plain linear heads only (use naive_distill_loss)"
            )
    body = None
    get = getattr(model, "get_decoder", None)
    if callable(get):
        body = get()
    if body is None or body is model:
        body = getattr(model, "base_model", None)
    if body is None or body is model:
        raise CapgapError(f"cannot find the decoder body of {type(model).__name__}")
    return body


def check_vocab(
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


def _chunk_loop(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    teacher: TeacherRows | None,
    targets: Tensor,
    objective: KDObjective,
    n_tokens: int,
    chunk_size: int,
    cap: float | None,
    need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor, Tensor | None, tuple[Tensor | None, ...]]:
    """Loss over all rows, chunk by chunk, with grads w.r.t. (hidden, weight, bias) where needed.

    hidden [N, H], weight [V, H], bias [V]; targets [N]; ``teacher`` gives the teacher's
    rows chunk by chunk (or is None: no teacher). ``cap``: the student's soft-cap.
    Returns (loss, ce mean, kd mean or None, (grad_hidden, grad_weight fp32, grad_bias fp32)).
    """
    grad_h = torch.empty_like(hidden) if need[0] else None  # [N, H]
    grad_w = torch.zeros_like(weight, dtype=torch.float32) if need[1] else None  # [V, H]
    grad_b = torch.zeros_like(bias, dtype=torch.float32) if need[2] else None  # [V]
    w = weight.detach().requires_grad_(need[1])
    b = None if bias is None else bias.detach().requires_grad_(need[2])
    ce_total = hidden.new_zeros((), dtype=torch.float32)
    kd_total = None if teacher is None else ce_total.clone()
    for start in range(0, hidden.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        # teacher frozen; its dtype may be lower, fp32 inside sums()
        t_logits = None if teacher is None else teacher.logits(rows)  # [C, V] or top-k rows
        h = hidden[rows].detach().requires_grad_(need[0])  # [C, H]
        with torch.enable_grad():
            logits = capped(F.linear(h, w, b), cap)  # [C, V]
            ce, kd = objective.sums(logits, t_logits, targets[rows])
            chunk_loss = objective.combine(ce, kd, n_tokens)
        del logits, t_logits  # the graph keeps what backward needs; drop the rest before it runs
        wrt = [x for x, n in zip((h, w, b), need, strict=True) if n]
        if wrt:
            grads = iter(torch.autograd.grad(chunk_loss, wrt))
            if need[0]:
                grad_h[rows] = next(grads)
            if need[1]:
                grad_w += next(grads)
            if need[2]:
                grad_b += next(grads)
        del chunk_loss  # frees this chunk's graph before the next chunk is built
        ce_total += ce.detach()
        if kd_total is not None and kd is not None:
            kd_total += kd.detach()
    loss = objective.combine(ce_total, kd_total, n_tokens)
    denom = max(n_tokens, 1)
    kd_mean = None if kd_total is None else kd_total / denom
    return loss, ce_total / denom, kd_mean, (grad_h, grad_w, grad_b)


class _FusedHeadLoss(torch.autograd.Function):
    """LM heads + objective, chunked; forward computes the gradients, backward scales them."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        teacher: TeacherRows | None,
        targets: Tensor,
        objective: KDObjective,
        n_tokens: int,
        chunk_size: int,
        cap: float | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        need = tuple(ctx.needs_input_grad[:3])
        loss, ce, kd, grads = _chunk_loop(
            hidden, weight, bias, teacher, targets, objective, n_tokens, chunk_size, cap, need,
        )
        ctx.save_for_backward(*grads)
        ctx.dtypes = (hidden.dtype, weight.dtype, None if bias is None else bias.dtype)
        kd = ce.new_full((), float("nan")) if kd is None else kd
        ctx.mark_non_differentiable(ce, kd)
        return loss, ce, kd

    @staticmethod
    def backward(ctx: Any, g_loss: Tensor, _g_ce: Tensor, _g_kd: Tensor) -> tuple:
        scaled = tuple(
            None if g is None else (g * g_loss).to(dtype)
            for g, dtype in zip(ctx.saved_tensors, ctx.dtypes, strict=True)
        )
        return (*scaled, None, None, None, None, None, None)


def _hidden(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Final post-norm hidden states [B, T, H], without logits."""
    out = decoder_body(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def _check_inputs(input_ids: Tensor, labels: Tensor, chunk_size: int | None) -> None:
    if input_ids.dim() != 2 or labels.shape != input_ids.shape:
        raise CapgapError(
            f"input_ids must be [B, T] and labels the same shape; got {tuple(input_ids.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise CapgapError(f"chunk_size must be >= 1, got {chunk_size}")


def _teacher_ready(student: nn.Module, teacher: nn.Module | None, alpha: float) -> nn.Module:
    if teacher is None:
        raise CapgapError(f"alpha={alpha} < 1 needs a teacher (alpha=1 is plain CE)")
    if teacher.training:
        raise CapgapError("the teacher must be frozen in eval mode: call teacher.eval() first")
    check_vocab(student, teacher)
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
    _check_inputs(input_ids, labels, chunk_size)
    t_rows = teacher_rows
    if objective.needs_teacher and t_rows is None and teacher_topk is not None:
        valid = valid_next_token_mask(labels, attention_mask, ignore_index)  # [B, T-1]
        t_rows = TeacherRows(topk=teacher_topk.rows((slice(None), slice(0, -1))).rows(valid))
    elif objective.needs_teacher:
        teacher = _teacher_ready(student, teacher, objective.alpha)
    head = lm_head(student)
    rows, targets = shift_and_flatten(
        _hidden(student, input_ids, attention_mask), labels, attention_mask, ignore_index
    )  # [N, H], [N]
    if objective.needs_teacher and t_rows is None:
        t_rows = teacher_rows_of(teacher, input_ids, labels, attention_mask, ignore_index)
    n = int(targets.numel())
    args = (rows, head.weight, head.bias, t_rows if objective.needs_teacher else None, targets,
            objective, n, chunk_size, softcap(student))
    if not torch.is_grad_enabled():  # evaluation: values only (needs_input_grad ignores no_grad)
        loss, ce, kd, _ = _chunk_loop(*args, need=(False, False, False))
        return LossOutput(loss, ce, kd, n)
    loss, ce, kd = _FusedHeadLoss.apply(*args)
    return LossOutput(loss, ce, kd if objective.needs_teacher else None, n)


@torch.no_grad()
def teacher_rows_of(teacher: nn.Module, input_ids: Tensor, labels: Tensor | None = None,
                    attention_mask: Tensor | None = None, ignore_index: int = IGNORE_INDEX,
                    share: bool = False) -> TeacherRows:
    """The frozen teacher's side of a batch's loss: its body run once on ``input_ids``
    ([B, T]), its hidden rows aligned with the student's targets. ``share``: keep the chunks'
    logits for other students of the same batch (see :class:`TeacherRows`)."""
    labels = input_ids if labels is None else labels
    hidden = _hidden(teacher, input_ids, attention_mask)  # [B, T, Ht]
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


def lm_loss(
    model: nn.Module,
    input_ids: Tensor,
    labels: Tensor | None = None,
    attention_mask: Tensor | None = None,
    chunk_size: int = 1024,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> LossOutput:
    """Plain next-token CE through the same chunked path (pretraining, evaluation)."""
    objective = KDObjective(alpha=1.0)
    return _fused_loss(
        model, None, input_ids, labels, attention_mask, objective, chunk_size, ignore_index
    )


def mean_lm_loss(model: nn.Module, batches: Iterable[Tensor],
                 device: torch.device | None = None) -> float:
    """Next-token CE over ``batches`` of packed windows, without gradients, each window
    weighted alike (a short last batch does not count as much as a full one)."""
    total, rows = 0.0, 0
    with torch.no_grad():
        for x in batches:
            x = x if device is None else x.to(device)
            total += float(lm_loss(model, x).loss) * x.shape[0]
            rows += x.shape[0]
    return total / max(rows, 1)


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
    _check_inputs(input_ids, labels, None)
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
