"""Pruned models: what they keep (:class:`KeepPlan`), the slicing that makes them smaller
(:func:`materialize`, :func:`export_vanilla`) and their formats on disk (:func:`load_pruned`,
:func:`save_pruned_model`).

Which units to keep is :mod:`capgap.prune`'s job; holding, saving and loading the result is
a model's, so every stage that hands models on (distillation, evaluation, the sweep) reads
pruned students without importing the pruner.
"""

from capgap.models.pruned.format import (
    EXPORTS,
    META_NAME,
    PLAN_NAME,
    REPORT_NAME,
    config_from_dict,
    has_per_layer_shapes,
    load_pruned,
    save_pruned_model,
)
from capgap.models.pruned.plan import KeepPlan
from capgap.models.pruned.shrink import export_vanilla, materialize

__all__ = [
    "EXPORTS",
    "META_NAME",
    "PLAN_NAME",
    "REPORT_NAME",
    "KeepPlan",
    "config_from_dict",
    "export_vanilla",
    "has_per_layer_shapes",
    "load_pruned",
    "materialize",
    "save_pruned_model",
]
