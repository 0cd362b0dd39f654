"""Distillation objectives: alpha * CE + (1 - alpha) * D(teacher || student), memory-bounded.

``distill_loss`` never builds full-vocabulary logits (see :mod:`.chunked`; the plain LM loss
it extends is :func:`capgap.train.loss.lm_loss`);
``naive_distill_loss`` is the straightforward reference. A teacher may also be given as cached
top-k log-probabilities (:class:`TopKTeacher`, built by :mod:`capgap.distill.cache`). Divergences are chosen by name
(:func:`list_divergences`); new ones join with ``@register_divergence("name")``.

The stage itself — :func:`distill` a student from a teacher into a run folder, configured by
:class:`DistillConfig` — lives in :mod:`.engine`, loaded on first use (it imports the data,
model and training stack).
"""

import importlib
from typing import Any

from capgap.distill.chunked import check_shared_vocab, distill_loss, naive_distill_loss
from capgap.distill.losses import (
    KDObjective,
    TopKTeacher,
    coarse_grain,
    distill_loss_from_logits,
    forward_kl,
    get_divergence,
    jsd,
    list_divergences,
    register_divergence,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    soft_ce,
    total_variation,
)

_ENGINE = ("DistillConfig", "DistillDataConfig", "DistillResult", "ObjectiveConfig", "distill")

__all__ = [
    *_ENGINE,
    "KDObjective",
    "TopKTeacher",
    "check_shared_vocab",
    "coarse_grain",
    "distill_loss",
    "distill_loss_from_logits",
    "forward_kl",
    "get_divergence",
    "jsd",
    "list_divergences",
    "naive_distill_loss",
    "register_divergence",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "soft_ce",
    "total_variation",
]


def __getattr__(name: str) -> Any:
    if name in _ENGINE:
        return getattr(importlib.import_module("capgap.distill.engine"), name)
    raise AttributeError(f"module 'capgap.distill' has no attribute {name!r}")
