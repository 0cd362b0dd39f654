"""Token-level distillation objectives on logits.

The objective (paper, section 3) for every valid next-token position::

    loss = alpha * CE(student, labels) + (1 - alpha) * s * D(teacher || student) at temperature tau

with ``alpha = 0.5``, ``tau = 1`` and ``D = soft_ce`` by default, ``s = tau**2`` (Hinton's scaling,
keeps the KD gradient magnitude independent of ``tau``; switch off with ``scale_kd_by_t2=False``;
it makes no difference at the paper's ``tau = 1``). CE always uses the plain logits (``tau = 1``).

Notation used below: ``p`` is the *teacher* distribution, ``q`` the *student* one, both
``softmax(logits / tau)`` over the whole vocabulary.

Divergences are small functions ``(student_logits [N, V], teacher_logits [N, V], **kw) -> [N]``,
registered by name (lm-eval-harness style) so configs can name them:

* ``soft_ce``:          -sum p log q                  (= forward KL + H(p); the paper's choice)
* ``forward_kl``:        sum p (log p - log q)
* ``reverse_kl``:        sum q (log q - log p)
* ``jsd``:               beta KL(p || m) + (1 - beta) KL(q || m),  m = beta p + (1 - beta) q,
                         beta in (0, 1), default 0.5 (the symmetric JSD).
* ``skew_forward_kl``:   KL(p || skew p + (1 - skew) q),   skew in [0, 1), default 0.1 (DistiLLM)
* ``skew_reverse_kl``:   KL(q || skew q + (1 - skew) p),   skew in [0, 1), default 0.1 (DistiLLM)
* ``tv``:                0.5 sum |p - q|

All are computed in fp32 from ``log_softmax``; mixtures use ``logaddexp`` in log space, so finite
logits never produce ``log(0)``.

The shift to next-token targets and the valid-token mask are the plain LM loss's
(:func:`capgap.train.loss.shift_and_flatten`); everything is normalised by the number of
valid predicted tokens, never by ``B * T``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from capgap.errors import CapgapError
from capgap.train.loss import IGNORE_INDEX, ce_sums_and_grad, shift_and_flatten, softmax_grad

Divergence = Callable[..., Tensor]
"""``(student_logits [N, V], teacher_logits [N, V], **kwargs) -> per-token values [N]``."""

_DIVERGENCES: dict[str, Divergence] = {}


def register_divergence(*names: str) -> Callable[[Divergence], Divergence]:
    """Decorator registering a divergence under one or more names."""

    def deco(fn: Divergence) -> Divergence:
        for name in names:
            if name in _DIVERGENCES and _DIVERGENCES[name] is not fn:
                raise ValueError(f"divergence {name!r} is already registered")
            _DIVERGENCES[name] = fn
        return fn

    return deco


def list_divergences() -> list[str]:
    """Registered divergence names, sorted."""
    return sorted(_DIVERGENCES)


def get_divergence(name: str) -> Divergence:
    """The divergence registered as ``name``; :class:`CapgapError` listing the names otherwise."""
    try:
        return _DIVERGENCES[name]
    except KeyError:
        raise CapgapError(
            f"unknown divergence {name!r}; choose one of: {', '.join(list_divergences())}"
        ) from None


def _log_probs(student_logits: Tensor, teacher_logits: Tensor) -> tuple[Tensor, Tensor]:
    """fp32 log-softmax of both: (log q [N, V], log p [N, V])."""
    return (
        F.log_softmax(student_logits.float(), dim=-1),
        F.log_softmax(teacher_logits.float(), dim=-1),
    )


def _kl(log_a: Tensor, log_b: Tensor) -> Tensor:
    """KL(a || b) per row from log-probabilities [N, V] -> [N]."""
    return (log_a.exp() * (log_a - log_b)).sum(-1)


def _log_mix(log_a: Tensor, log_b: Tensor, w: float) -> Tensor:
    """log(w a + (1 - w) b) in log space [N, V]; w in [0, 1)."""
    log_w = math.log(w) if w > 0 else -math.inf
    # logaddexp(-inf, x) == x with a finite gradient, so w == 0 is safe.
    return torch.logaddexp(log_a + log_w, log_b + math.log1p(-w))


def _check_open_unit(name: str, value: float, low_closed: bool = False) -> None:
    ok = (0.0 <= value < 1.0) if low_closed else (0.0 < value < 1.0)
    if not ok:
        interval = "[0, 1)" if low_closed else "(0, 1)"
        raise CapgapError(f"{name} must be in {interval}, got {value}")


@register_divergence("soft_ce")
def soft_ce(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """-sum p log q: cross-entropy to the teacher distribution (forward KL + teacher entropy)."""
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return -(log_p.exp() * log_q).sum(-1)


@register_divergence("forward_kl")
def forward_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(p || q), mass-covering; same student gradient as ``soft_ce``."""
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return _kl(log_p, log_q)


@register_divergence("reverse_kl")
def reverse_kl(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """KL(q || p), mode-seeking."""
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return _kl(log_q, log_p)


@register_divergence("jsd")
def jsd(student_logits: Tensor, teacher_logits: Tensor, beta: float = 0.5) -> Tensor:
    """Generalised JSD: beta KL(p || m) + (1 - beta) KL(q || m), m = beta p + (1 - beta) q.

    This is TRL GKD's ``generalized_jsd_loss`` (GKD paper eq. 1 with P = teacher, Q = student;
    TRL mixes ``student + log(1 - beta)`` with ``teacher + log(beta)``). Near beta -> 0 it
    behaves like ``beta * KL(p || q)`` and near beta -> 1 like ``(1 - beta) * KL(q || p)``;
    at the endpoints it is identically 0, so (unlike TRL, which swaps in unscaled forward /
    reverse KL there) beta must be in (0, 1): use ``forward_kl`` / ``reverse_kl`` instead.
    """
    _check_open_unit("jsd beta", beta)
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    log_m = _log_mix(log_p, log_q, beta)  # [N, V]
    return beta * _kl(log_p, log_m) + (1.0 - beta) * _kl(log_q, log_m)


@register_divergence("skew_forward_kl")
def skew_forward_kl(student_logits: Tensor, teacher_logits: Tensor, skew: float = 0.1) -> Tensor:
    """DistiLLM's skew KL: KL(p || skew p + (1 - skew) q); skew = 0 is forward KL.

    DistiLLM's code drops the teacher-entropy term (same gradient); this is the true KL, >= 0.
    """
    _check_open_unit("skew_forward_kl skew", skew, low_closed=True)
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return _kl(log_p, _log_mix(log_p, log_q, skew))


@register_divergence("skew_reverse_kl")
def skew_reverse_kl(student_logits: Tensor, teacher_logits: Tensor, skew: float = 0.1) -> Tensor:
    """DistiLLM's skew reverse KL: KL(q || skew q + (1 - skew) p); skew = 0 is reverse KL."""
    _check_open_unit("skew_reverse_kl skew", skew, low_closed=True)
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return _kl(log_q, _log_mix(log_q, log_p, skew))


@register_divergence("tv")
def total_variation(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """Total variation distance 0.5 sum |p - q|, in [0, 1]."""
    log_q, log_p = _log_probs(student_logits, teacher_logits)
    return 0.5 * (log_p.exp() - log_q.exp()).abs().sum(-1)


def _check_kwargs(name: str, fn: Divergence, kwargs: Mapping[str, Any]) -> None:
    """Unknown keyword arguments for a divergence are a user error, not a TypeError."""
    params = list(inspect.signature(fn).parameters)[2:]
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        allowed = ", ".join(params) or "none"
        raise CapgapError(
            f"divergence {name!r} takes no argument(s) {', '.join(unknown)} (accepted: {allowed})"
        )


def _at_temperature(logits: Tensor, temperature: float) -> Tensor:
    """fp32 logits / tau (no copy at tau = 1)."""
    logits = logits.float()
    return logits if temperature == 1.0 else logits / temperature


class TopKTeacher(NamedTuple):
    """A teacher distribution kept as its k likeliest tokens plus the mass of all the others.

    indices [..., k] (token ids), logp [..., k] (their log-probabilities at the distillation
    temperature), other [...] (log of the remaining mass, 1 - sum of the top-k probabilities).
    """

    indices: Tensor
    logp: Tensor
    other: Tensor

    def rows(self, index: Any) -> TopKTeacher:
        """The same rows of every field (``index``: a slice or a boolean mask over rows)."""
        return TopKTeacher(self.indices[index], self.logp[index], self.other[index])


LOG_FLOOR = -1e4
"""Log-probabilities are clamped here: exp() is exactly 0 in fp32, yet 0 * log stays finite."""


def coarse_grain(student_logits: Tensor, teacher: TopKTeacher) -> tuple[Tensor, Tensor]:
    """Both distributions over the k + 1 outcomes {top-k token 1, ..., token k, "other"}.

    student_logits [N, V] (already divided by the temperature); returns (student, teacher)
    log-probabilities [N, k + 1]. The teacher's residual mass is kept on an explicit "other"
    bucket and compared with the student's mass outside the same k tokens, rather than
    renormalising over the top-k: every top-k term of soft_ce / forward_kl is then exactly
    the full-vocabulary term, and only the tail's sum_j p_j log q_j is replaced by
    r log(sum_j q_j) (r = the tail mass). The result is the divergence between the two
    coarse-grained distributions: exact when k = V - 1 or when the teacher's tail is
    proportional to the student's, and for the f-divergences (KLs, JSD, TV) a lower bound
    on the full one (data-processing inequality).
    """
    log_q = F.log_softmax(student_logits.float(), dim=-1)  # [N, V]
    idx = teacher.indices.long()
    s_top = log_q.gather(-1, idx)  # [N, k]
    s_rest = torch.logsumexp(log_q.scatter(-1, idx, -math.inf), dim=-1)  # [N], no 1 - sum
    student = torch.cat([s_top, s_rest.clamp_min(LOG_FLOOR)[:, None]], dim=-1)
    t_top = teacher.logp.float().clamp_min(LOG_FLOOR)
    t_rest = teacher.other.float().clamp_min(LOG_FLOOR)[:, None]
    return student, torch.cat([t_top, t_rest], dim=-1)


@dataclass(frozen=True)
class KDObjective:
    """alpha * CE + (1 - alpha) * s * D at temperature tau, as per-chunk sums.

    Chunked callers add :meth:`sums` over chunks of rows and divide once by the total number of
    valid tokens (:meth:`combine`), so the result does not depend on the chunking.
    """

    alpha: float = 0.5
    temperature: float = 1.0
    divergence: str = "soft_ce"
    div_kwargs: Mapping[str, Any] = field(default_factory=dict)
    scale_kd_by_t2: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.alpha <= 1.0:
            raise CapgapError(f"alpha must be in [0, 1], got {self.alpha}")
        if not self.temperature > 0:
            raise CapgapError(f"temperature must be > 0, got {self.temperature}")
        _check_kwargs(self.divergence, get_divergence(self.divergence), self.div_kwargs)

    @property
    def needs_teacher(self) -> bool:
        return self.alpha < 1.0

    @property
    def kd_scale(self) -> float:
        return self.temperature**2 if self.scale_kd_by_t2 else 1.0

    def sums(
        self, student_logits: Tensor, teacher_logits: Tensor | TopKTeacher | None, targets: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """(sum of CE, sum of scaled D) over rows; logits [N, V] any dtype, targets [N].

        The teacher is given as logits [N, V] or as cached top-k log-probabilities
        (:class:`TopKTeacher`, already at this temperature; see :func:`coarse_grain`).
        """
        if self.needs_teacher and self._shares_log_softmax(teacher_logits):
            return self._ce_and_soft_ce(student_logits, teacher_logits, targets)
        ce = F.cross_entropy(student_logits.float(), targets, reduction="sum")
        if not self.needs_teacher or teacher_logits is None:
            return ce, None
        s_logits = _at_temperature(student_logits, self.temperature)
        if isinstance(teacher_logits, TopKTeacher):
            s_logits, t_logits = coarse_grain(s_logits, teacher_logits)  # [N, k + 1] each
        else:
            t_logits = _at_temperature(teacher_logits, self.temperature)
        d = get_divergence(self.divergence)(s_logits, t_logits, **self.div_kwargs)  # [N]
        return ce, self.kd_scale * d.sum()

    def sums_and_grad(self, student_logits: Tensor, teacher_logits: Tensor | TopKTeacher | None,
                      targets: Tensor, n_tokens: int) -> tuple[Tensor, Tensor | None, Tensor] | None:
        """:meth:`sums` and the gradient of :meth:`combine` w.r.t. the (fp32) student logits
        in closed form, for CE alone and for the paper's CE + soft CE at tau = 1:
        d/dz = (alpha (q - onehot) + (1 - alpha) s (q - p)) / n, q and p the student's and
        teacher's softmax. None for any other objective (autograd handles those)."""
        denom = max(n_tokens, 1)
        teacher = self.needs_teacher and teacher_logits is not None
        if not teacher:
            return ce_sums_and_grad(student_logits, targets, self.alpha / denom)
        if not self._shares_log_softmax(teacher_logits):
            return None
        log_q = F.log_softmax(student_logits, dim=-1)  # [N, V]
        ce = F.nll_loss(log_q, targets, reduction="sum")
        p = F.softmax(teacher_logits.float(), dim=-1)  # [N, V]
        kd = self.kd_scale * -torch.dot(p.view(-1), log_q.view(-1))  # one pass, no [N, V] product
        c = (1.0 - self.alpha) * self.kd_scale / denom
        return ce, kd, softmax_grad(log_q, targets, self.alpha / denom, p, c)

    def _shares_log_softmax(self, teacher_logits: Tensor | TopKTeacher | None) -> bool:
        """The paper's objective (soft CE at tau = 1) can reuse CE's student log-softmax."""
        return (self.divergence == "soft_ce" and self.temperature == 1.0
                and isinstance(teacher_logits, Tensor))

    def _ce_and_soft_ce(
        self, student_logits: Tensor, teacher_logits: Tensor, targets: Tensor
    ) -> tuple[Tensor, Tensor]:
        """CE and soft CE from one student log-softmax and one teacher softmax (the hot path:
        same values as the general path, one [N, V] pass fewer forward and backward)."""
        log_q = F.log_softmax(student_logits.float(), dim=-1)  # [N, V]
        ce = F.nll_loss(log_q, targets, reduction="sum")
        p = F.softmax(teacher_logits.float(), dim=-1)  # [N, V]
        return ce, self.kd_scale * -(p * log_q).sum()

    def combine(self, ce_sum: Tensor, kd_sum: Tensor | None, n_tokens: int) -> Tensor:
        """The loss from sums: (alpha CE + (1 - alpha) KD) / max(n_tokens, 1)."""
        denom = max(n_tokens, 1)  # no valid token: loss 0, not NaN
        loss = ce_sum * (self.alpha / denom)
        if kd_sum is not None and self.alpha < 1.0:
            loss = loss + kd_sum * ((1.0 - self.alpha) / denom)
        return loss


def distill_loss_from_logits(
    student_logits: Tensor,
    teacher_logits: Tensor | None,
    labels: Tensor,
    attention_mask: Tensor | None = None,
    objective: KDObjective | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> tuple[Tensor, Tensor, Tensor | None, int]:
    """The objective on full logits [B, T, V]: (loss, ce, kd, n_tokens); ce / kd detached means.

    The straightforward version: both [B, T, V] tensors must exist. For training use
    :func:`capgap.distill.distill_loss`, which never builds them.
    """
    objective = objective or KDObjective()
    s_rows, targets = shift_and_flatten(student_logits, labels, attention_mask, ignore_index)
    t_rows = None
    if objective.needs_teacher:
        if teacher_logits is None:
            raise CapgapError(f"alpha={objective.alpha} < 1 needs teacher logits")
        if teacher_logits.shape != student_logits.shape:
            raise CapgapError(
                f"teacher logits {tuple(teacher_logits.shape)} != student logits "
                f"{tuple(student_logits.shape)}: teacher and student must share a vocabulary"
            )
        t_rows, _ = shift_and_flatten(teacher_logits, labels, attention_mask, ignore_index)
    n = int(targets.numel())
    ce_sum, kd_sum = objective.sums(s_rows, t_rows, targets)
    loss = objective.combine(ce_sum, kd_sum, n)
    denom = max(n, 1)
    kd = None if kd_sum is None else kd_sum.detach() / denom
    return loss, ce_sum.detach() / denom, kd, n
