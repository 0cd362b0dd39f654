"""Distillation objectives: alpha * CE + (1 - alpha) * D(teacher || student), memory-bounded.

``distill_loss`` / ``lm_loss`` never build full-vocabulary logits (see :mod:`.chunked`);
``naive_distill_loss`` is the straightforward reference. A teacher may also be given as cached
top-k log-probabilities (:class:`TopKTeacher`, built by :mod:`capgap.distill.cache`). Divergences are chosen by name
(:func:`list_divergences`); new ones join with ``@register_divergence("name")``.
"""

from capgap.distill.chunked import (
    LossOutput,
    check_vocab,
    decoder_body,
    distill_loss,
    lm_head,
    lm_loss,
    naive_distill_loss,
)
from capgap.distill.losses import (
    IGNORE_INDEX,
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
    shift_and_flatten,
    skew_forward_kl,
    skew_reverse_kl,
    soft_ce,
    total_variation,
    valid_next_token_mask,
)

__all__ = [
    "IGNORE_INDEX",
    "KDObjective",
    "LossOutput",
    "TopKTeacher",
    "check_vocab",
    "coarse_grain",
    "decoder_body",
    "distill_loss",
    "distill_loss_from_logits",
    "forward_kl",
    "get_divergence",
    "jsd",
    "list_divergences",
    "lm_head",
    "lm_loss",
    "naive_distill_loss",
    "register_divergence",
    "reverse_kl",
    "shift_and_flatten",
    "skew_forward_kl",
    "skew_reverse_kl",
    "soft_ce",
    "total_variation",
    "valid_next_token_mask",
]
