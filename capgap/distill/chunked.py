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


def _chunk_loop(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    t_hidden: Tensor | None,
    t_weight: Tensor | None,
    t_bias: Tensor | None,
    t_topk: TopKTeacher | None,
    targets: Tensor,
    objective: KDObjective,
    n_tokens: int,
    chunk_size: int,
    caps: tuple[float | None, float | None],
    need: tuple[bool, bool, bool],
) -> tuple[Tensor, Tensor, Tensor | None, tuple[Tensor | None, ...]]:
    """Loss over all rows, chunk by chunk, with grads w.r.t. (hidden, weight, bias) where needed.

    hidden [N, H], weight [V, H], bias [V]; t_hidden [N, Ht], t_weight [V, Ht]; targets [N].
    The teacher is either its hidden states and head (``t_hidden``) or cached top-k rows
    (``t_topk``, fields [N, k] / [N]), or absent. ``caps``: (student, teacher) soft-caps.
    Returns (loss, ce mean, kd mean or None, (grad_hidden, grad_weight fp32, grad_bias fp32)).
    """
    grad_h = torch.empty_like(hidden) if need[0] else None  # [N, H]
    grad_w = torch.zeros_like(weight, dtype=torch.float32) if need[1] else None  # [V, H]
    grad_b = torch.zeros_like(bias, dtype=torch.float32) if need[2] else None  # [V]
    w = weight.detach().requires_grad_(need[1])
    b = None if bias is None else bias.detach().requires_grad_(need[2])
    ce_total = hidden.new_zeros((), dtype=torch.float32)
    kd_total = None if t_hidden is None and t_topk is None else ce_total.clone()
    for start in range(0, hidden.shape[0], chunk_size):
        rows = slice(start, start + chunk_size)
        t_logits = None if t_topk is None else t_topk.rows(rows)
        if t_hidden is not None:
            with torch.no_grad():  # teacher frozen; its dtype may be lower, fp32 inside sums()
                t_logits = capped(F.linear(t_hidden[rows], t_weight, t_bias), caps[1])  # [C, V]
        h = hidden[rows].detach().requires_grad_(need[0])  # [C, H]
        with torch.enable_grad():
            logits = capped(F.linear(h, w, b), caps[0])  # [C, V]
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
        t_hidden: Tensor | None,
        t_weight: Tensor | None,
        t_bias: Tensor | None,
        t_topk: TopKTeacher | None,
        targets: Tensor,
        objective: KDObjective,
        n_tokens: int,
        chunk_size: int,
        caps: tuple[float | None, float | None],
    ) -> tuple[Tensor, Tensor, Tensor]:
        need = tuple(ctx.needs_input_grad[:3])
        loss, ce, kd, grads = _chunk_loop(
            hidden, weight, bias, t_hidden, t_weight, t_bias, t_topk, targets, objective,
            n_tokens, chunk_size, caps, need,
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
        return (*scaled, None, None, None, None, None, None, None, None, None)


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
    teacher_hidden: Tensor | None = None,
) -> LossOutput:
    labels = input_ids if labels is None else labels
    _check_inputs(input_ids, labels, chunk_size)
    t_topk = None
    if objective.needs_teacher and teacher_topk is not None:
        valid = valid_next_token_mask(labels, attention_mask, ignore_index)  # [B, T-1]
        t_topk = teacher_topk.rows((slice(None), slice(0, -1))).rows(valid)  # [N, k], [N]
    elif objective.needs_teacher:
        teacher = _teacher_ready(student, teacher, objective.alpha)
    head = lm_head(student)
    rows, targets = shift_and_flatten(
        _hidden(student, input_ids, attention_mask), labels, attention_mask, ignore_index
    )  # [N, H], [N]
    t_rows = t_weight = t_bias = None
    if objective.needs_teacher and t_topk is None:
        if teacher_hidden is None:
            with torch.no_grad():
                teacher_hidden = _hidden(teacher, input_ids, attention_mask)  # [B, T, Ht]
        t_rows, _ = shift_and_flatten(teacher_hidden.detach(), labels, attention_mask,
                                      ignore_index)  # [N, Ht]
        t_head = lm_head(teacher)
        t_weight, t_bias = t_head.weight.detach(), t_head.bias
        t_bias = None if t_bias is None else t_bias.detach()
    n = int(targets.numel())
    caps = (softcap(student), softcap(teacher) if t_rows is not None else None)
    args = (rows, head.weight, head.bias, t_rows, t_weight, t_bias, t_topk, targets, objective, n,
            chunk_size, caps)
    if not torch.is_grad_enabled():  # evaluation: values only (needs_input_grad ignores no_grad)
        loss, ce, kd, _ = _chunk_loop(*args, need=(False, False, False))
        return LossOutput(loss, ce, kd, n)
    loss, ce, kd = _FusedHeadLoss.apply(*args)
    return LossOutput(loss, ce, kd if objective.needs_teacher else None, n)


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
    teacher_hidden: Tensor | None = None,
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

    ``teacher_hidden`` [B, T, Ht]: the teacher body's final hidden states of ``input_ids``,
    computed once elsewhere (:func:`teacher_body_states`, shared by students trained in
    lockstep); the teacher's head still runs here, chunk by chunk.
    """
    objective = KDObjective(alpha, temperature, divergence, dict(div_kwargs), scale_kd_by_t2)
    return _fused_loss(
        student, teacher, input_ids, labels, attention_mask, objective, chunk_size, ignore_index,
        teacher_topk, teacher_hidden,
    )


@torch.no_grad()
def teacher_body_states(teacher: nn.Module, input_ids: Tensor,
                        attention_mask: Tensor | None = None) -> Tensor:
    """The frozen teacher's final post-norm hidden states [B, T, Ht], exactly as
    :func:`distill_loss` computes them itself (so sharing them changes no bit)."""
    return _hidden(teacher, input_ids, attention_mask)


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
