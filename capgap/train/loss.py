"""The plain LM loss, memory-bounded: no full-vocabulary logits tensor ever exists.

A stock forward builds [B, T, V] logits (V = 50k makes them the largest tensors of a
small-model step), and chunking only the loss saves nothing because autograd keeps every
chunk. Instead we run the model's *body* (final hidden state, after the final norm) and fuse
the LM head with the loss: for each chunk of C rows, :class:`_FusedHeadLoss` computes the
head's [C, V] logits, the loss of the chunk and at once its gradient w.r.t. the hidden chunk
and head weight (+ bias), keeps only those gradients, and drops the logits. Backward just
scales the stored gradients (the Liger / torchtune chunked-CE idea). Peak extra memory is a
few [C, V] fp32 buffers plus one [V, H] weight gradient.

The loop is generic over an :class:`Objective` (per-chunk sums, one division at the end) and
an optional teacher giving each chunk's logits: :func:`lm_loss` (pretraining, SFT,
evaluation) is plain next-token CE; distillation (:mod:`capgap.distill.chunked`) plugs in
its teacher and divergence.

The body is ``model.get_decoder()`` (transformers 5; else ``model.base_model``): GPT-2's
``transformer``, GPT-NeoX's ``gpt_neox``, LLaMA's ``model``. Its ``last_hidden_state`` is taken
after the final norm (``ln_f`` / ``final_layer_norm`` / ``norm``), which is exactly what the
model feeds its LM head (``model.get_output_embeddings()``). Gemma's final-logit soft-capping
(``cap * tanh(logits / cap)``) is applied to each chunk, as the model does; other logit
post-processing (Cohere's, Granite's scaling) is refused rather than silently given a
different loss.

Shift convention (done once, in :func:`shift_and_flatten`): a Hugging Face causal LM predicts
token ``t + 1`` from position ``t``, so users pass ``labels = input_ids`` and row ``t`` of the
logits / hidden states is scored against ``labels[:, t + 1]``. Everything is normalised by the
number of valid predicted tokens, never by ``B * T``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any, NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from capgap.errors import CapgapError

IGNORE_INDEX = -100

# Config attributes by which some HF families transform logits after the head, with the
# values meaning "no transform". body + head would silently differ from model.logits.
_LOGIT_TRANSFORMS: dict[str, tuple[Any, ...]] = {
    "logit_scale": (None, 1, 1.0),  # Cohere
    "logits_scaling": (None, 1, 1.0),  # Granite
}

class ChunkTeacher(Protocol):
    """A teacher's side of one batch's loss, chunk by chunk (e.g.
    :class:`capgap.distill.chunked.TeacherRows`)."""

    def logits(self, rows: slice) -> Any:
        """The teacher for ``rows``: logits [C, V], or what the objective reads instead."""


class LossOutput(NamedTuple):
    """One step's loss and its parts (parts detached, for logging)."""

    loss: Tensor  # scalar; differentiable w.r.t. the student
    ce: Tensor  # mean CE to the labels over valid tokens
    kd: Tensor | None  # mean (temperature-scaled) divergence; None when no teacher was run
    n_tokens: int  # valid predicted tokens (the normaliser)


class Objective(Protocol):
    """A loss as per-chunk sums, divided once by the number of valid tokens, so the result
    does not depend on the chunking."""

    @property
    def needs_teacher(self) -> bool: ...

    def sums(self, student_logits: Tensor, teacher_logits: Any,
             targets: Tensor) -> tuple[Tensor, Tensor | None]: ...

    def combine(self, ce_sum: Tensor, kd_sum: Tensor | None, n_tokens: int) -> Tensor: ...

    # Optional: sums_and_grad(student_logits fp32, teacher_logits, targets, n_tokens) ->
    # (ce_sum, kd_sum, d combine / d logits) or None, the closed-form fast path.


def softmax_grad(log_q: Tensor, targets: Tensor, ce_scale: float, p: Tensor | None = None,
                 kd_scale: float = 0.0) -> Tensor:
    """The gradient w.r.t. the logits (whose log-softmax is ``log_q`` [N, V], consumed) of
    ``ce_scale`` x summed CE to ``targets`` plus ``kd_scale`` x summed soft CE to the
    probabilities ``p``: ce_scale (q - onehot) on valid rows + kd_scale (q - p), in two
    passes over [N, V]."""
    valid = targets != IGNORE_INDEX
    every = bool(valid.all())
    grad = log_q.exp_()  # q
    grad.mul_(ce_scale + kd_scale if every else valid[:, None] * ce_scale + kd_scale)
    if p is not None:
        grad.sub_(p, alpha=kd_scale)
    rows = (torch.arange(targets.numel(), device=targets.device) if every
            else valid.nonzero().squeeze(1))
    grad[rows, targets[rows]] -= ce_scale
    return grad


def ce_sums_and_grad(logits: Tensor, targets: Tensor, scale: float) -> tuple[Tensor, None, Tensor]:
    """The summed CE of fp32 ``logits`` and ``scale`` x its gradient w.r.t. them: the
    closed form of a loss that is CE alone (``sums_and_grad`` without a teacher)."""
    log_q = F.log_softmax(logits, dim=-1)
    ce = F.nll_loss(log_q, targets, reduction="sum")
    return ce, None, softmax_grad(log_q, targets, scale)


class NextTokenCE:
    """Plain next-token cross-entropy (fp32), the objective of :func:`lm_loss`."""

    needs_teacher = False

    def sums(self, student_logits: Tensor, teacher_logits: Any,
             targets: Tensor) -> tuple[Tensor, None]:
        return F.cross_entropy(student_logits.float(), targets, reduction="sum"), None

    def sums_and_grad(self, student_logits: Tensor, teacher_logits: Any, targets: Tensor,
                      n_tokens: int) -> tuple[Tensor, None, Tensor]:
        """:meth:`sums` and the gradient of :meth:`combine` w.r.t. the (fp32) logits, in
        closed form (see :func:`_chunk_loop`)."""
        return ce_sums_and_grad(student_logits, targets, 1.0 / max(n_tokens, 1))

    def combine(self, ce_sum: Tensor, kd_sum: Tensor | None, n_tokens: int) -> Tensor:
        return ce_sum * (1.0 / max(n_tokens, 1))  # no valid token: loss 0, not NaN


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


def hidden_states(model: nn.Module, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
    """Final post-norm hidden states [B, T, H], without logits."""
    out = decoder_body(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state


def valid_next_token_mask(
    labels: Tensor, attention_mask: Tensor | None = None, ignore_index: int = IGNORE_INDEX
) -> Tensor:
    """Which positions t in [0, T-1) are scored against labels[:, t + 1]: [B, T - 1] bool.

    Excluded: targets equal to ``ignore_index`` and, with an attention mask, rows whose target
    *or* input position is padding (a left-padded row's first real token is not predicted,
    exactly as for an unpadded sequence).
    """
    valid = labels[:, 1:] != ignore_index  # [B, T-1]
    if attention_mask is not None:
        if attention_mask.shape != labels.shape:
            raise CapgapError(
                f"attention_mask shape {tuple(attention_mask.shape)} != labels shape {tuple(labels.shape)}"
            )
        am = attention_mask.bool()
        valid = valid & am[:, 1:] & am[:, :-1]
    return valid


def shift_and_flatten(
    x: Tensor,
    labels: Tensor,
    attention_mask: Tensor | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor]:
    """Align per-position rows with their next-token targets, keeping valid ones only.

    x: [B, T, D] (hidden states or logits); labels: [B, T] (usually ``input_ids``).
    Returns rows [N, D] and targets [N], N = number of valid predicted tokens.
    """
    if x.shape[:2] != labels.shape:
        raise CapgapError(
            f"labels shape {tuple(labels.shape)} does not match inputs {tuple(x.shape[:2])}"
        )
    valid = valid_next_token_mask(labels, attention_mask, ignore_index)  # [B, T-1]
    return x[:, :-1][valid], labels[:, 1:][valid]  # [N, D], [N]


def check_inputs(input_ids: Tensor, labels: Tensor, chunk_size: int | None) -> None:
    if input_ids.dim() != 2 or labels.shape != input_ids.shape:
        raise CapgapError(
            f"input_ids must be [B, T] and labels the same shape; got {tuple(input_ids.shape)} "
            f"and {tuple(labels.shape)}"
        )
    if chunk_size is not None and chunk_size < 1:
        raise CapgapError(f"chunk_size must be >= 1, got {chunk_size}")


def _chunk_loop(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    teacher: ChunkTeacher | None,
    targets: Tensor,
    objective: Objective,
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
    fast = loss_kernel() == "fast"
    closed = (fast and any(need) and hasattr(objective, "sums_and_grad")
              and hidden.dtype == weight.dtype == torch.float32
              and not torch.is_autocast_enabled(hidden.device.type))
    step = rows_per_pass(chunk_size, weight.shape[0], hidden.device) if fast else chunk_size
    for start in range(0, hidden.shape[0], step):
        rows = slice(start, start + step)
        # teacher frozen; its dtype may be lower, fp32 inside sums()
        t_logits = None if teacher is None else teacher.logits(rows)  # [C, V] or top-k rows
        if closed:
            sums = _closed_form_chunk(hidden[rows].detach(), w.detach(),
                                      None if b is None else b.detach(), t_logits,
                                      targets[rows], objective, n_tokens, cap,
                                      (None if grad_h is None else grad_h[rows], grad_w, grad_b))
            if sums is not None:
                ce_total += sums[0]
                if kd_total is not None and sums[1] is not None:
                    kd_total += sums[1]
                continue
            closed = False  # no closed form for this objective and teacher: not on any chunk
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


LOSS_KERNEL_ENV = "CAPGAP_LOSS_KERNEL"
"""``fast`` (default): closed-form gradients and cache-sized CPU passes; ``autograd``: the
loss as capgap computed it before them (autograd per chunk of ``chunk_size`` rows), for
comparisons (bench/sweep_throughput.py). Both agree to fp32 rounding (tested)."""


def loss_kernel() -> str:
    """The head + loss kernel this process uses (:data:`LOSS_KERNEL_ENV`; workers inherit it)."""
    name = os.environ.get(LOSS_KERNEL_ENV, "fast")
    if name not in ("fast", "autograd"):
        raise CapgapError(f"{LOSS_KERNEL_ENV} must be fast or autograd, got {name!r}")
    return name


CPU_BLOCK_BYTES = 512 * 1024
"""On a CPU, the [C, V] fp32 buffers of one pass are kept near this size so that the loss's
several passes over them stay in cache (measured on this machine's 2 MB L2: at vocab 4096,
128 rows run the head + soft-CE step 1.8x faster than 1024; see :func:`rows_per_pass`)."""


def rows_per_pass(chunk_size: int, vocab: int, device: torch.device) -> int:
    """Rows of each pass of :func:`_chunk_loop`: ``chunk_size`` on accelerators (it caps
    memory); on a CPU a power of two giving about :data:`CPU_BLOCK_BYTES` of logits, at least
    128 rows (every pass also adds a [V, H] product to the head's gradient), and
    ``chunk_size`` for vocabularies where 128 rows already exceed 8 MiB (at vocab 49k, 16-row
    passes run 4x slower than 1024). Depends on the vocabulary only, so students of one
    teacher (one vocabulary) share its per-pass logits."""
    if device.type != "cpu":
        return chunk_size
    rows = max(128, 1 << max(0, (CPU_BLOCK_BYTES // (4 * vocab)).bit_length() - 1))
    return chunk_size if 4 * vocab * rows > 8 << 20 else min(chunk_size, rows)


def _closed_form_chunk(h: Tensor, w: Tensor, b: Tensor | None, t_logits: Any, targets: Tensor,
                       objective: Objective, n_tokens: int, cap: float | None,
                       grads: tuple[Tensor | None, Tensor | None, Tensor | None],
                       ) -> tuple[Tensor, Tensor | None] | None:
    """One chunk's (CE, KD) sums, its gradients w.r.t. (h, w, b) written into ``grads``
    (this chunk's rows of the hidden gradient, set; the head's weight and bias gradients,
    accumulated; None where not needed), without autograd: the objective gives d loss /
    d logits in closed form (CE: softmax - onehot; soft CE: softmax - teacher probabilities),
    then two matmuls. Same values as the autograd path to fp32 rounding, with fewer passes
    over the [C, V] logits; None (nothing written) where the objective has no closed form for
    this teacher (other divergences, top-k teachers): the autograd path runs instead."""
    logits = capped(F.linear(h, w, b), cap)  # [C, V] fp32
    out = objective.sums_and_grad(logits, t_logits, targets, n_tokens)  # type: ignore[attr-defined]
    if out is None:
        return None
    ce, kd, g = out  # g: d loss / d capped logits [C, V]
    if cap is not None:  # d (cap tanh(x / cap)) / dx = 1 - (logits / cap)^2
        g.mul_(1.0 - (logits / cap).square_())
    g_h, g_w, g_b = grads
    if g_h is not None:
        torch.mm(g, w, out=g_h)
    if g_w is not None:
        g_w.addmm_(g.t(), h)
    if g_b is not None:
        g_b += g.sum(0)
    return ce, kd


class _FusedHeadLoss(torch.autograd.Function):
    """LM head + objective, chunked; forward computes the gradients, backward scales them."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        teacher: ChunkTeacher | None,
        targets: Tensor,
        objective: Objective,
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


def head_loss(head: nn.Linear, cap: float | None, rows: Tensor, targets: Tensor,
              objective: Objective, chunk_size: int,
              teacher: ChunkTeacher | None = None) -> LossOutput:
    """``objective`` of the LM ``head`` (soft-capped at ``cap``) on hidden ``rows`` [N, H]
    against ``targets`` [N], chunked; differentiable w.r.t. the rows and the head when grad
    is enabled."""
    n = int(targets.numel())
    args = (rows, head.weight, head.bias, teacher, targets, objective, n, chunk_size, cap)
    if not torch.is_grad_enabled():  # evaluation: values only (needs_input_grad ignores no_grad)
        loss, ce, kd, _ = _chunk_loop(*args, need=(False, False, False))
        return LossOutput(loss, ce, kd, n)
    loss, ce, kd = _FusedHeadLoss.apply(*args)
    return LossOutput(loss, ce, kd if objective.needs_teacher else None, n)


def lm_loss(
    model: nn.Module,
    input_ids: Tensor,
    labels: Tensor | None = None,
    attention_mask: Tensor | None = None,
    chunk_size: int = 1024,
    *,
    ignore_index: int = IGNORE_INDEX,
) -> LossOutput:
    """Plain next-token CE through the chunked head (pretraining, SFT, evaluation).

    input_ids / labels / attention_mask: [B, T]; ``labels`` defaults to ``input_ids`` (the
    shift to next-token targets happens inside; -100 marks ignored targets).
    """
    labels = input_ids if labels is None else labels
    check_inputs(input_ids, labels, chunk_size)
    head = lm_head(model)
    rows, targets = shift_and_flatten(
        hidden_states(model, input_ids, attention_mask), labels, attention_mask, ignore_index
    )  # [N, H], [N]
    return head_loss(head, softcap(model), rows, targets, NextTokenCE(), chunk_size)


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
