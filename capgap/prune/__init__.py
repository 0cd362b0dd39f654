"""Structured pruning by expressiveness scores (heads, FFN neurons, hidden width, depth).

See ``capgap/prune/README.md``. Public API::

    from capgap.prune import score, prune, save_pruned, load_pruned
"""

from capgap.models.arch import ParamTable
from capgap.prune.api import PruneResult, check, load_pruned, prune, save_pruned, score
from capgap.prune.masks import MaskSet, attach
from capgap.prune.materialize import export_vanilla, materialize
from capgap.prune.plan import Plan
from capgap.prune.scores import Scores, baseline_scores

__all__ = [
    "MaskSet",
    "ParamTable",
    "Plan",
    "PruneResult",
    "Scores",
    "attach",
    "baseline_scores",
    "check",
    "export_vanilla",
    "load_pruned",
    "materialize",
    "prune",
    "save_pruned",
    "score",
]
