"""Pruning methods by name: how heads, FFN neurons, hidden dims and layers get their scores.

Every method returns the same :class:`~capgap.prune.scores.Scores` (one value per KV group,
neuron, hidden dim and layer), so allocation, slicing and saving are shared; a method only
decides what "important" means. Entries are data (name, one-line summary, what a calibration
pass costs, where the implementation lives); the implementation is imported on use, so
``capgap prune --help`` lists the methods without loading torch. Each implementation's
docstring cites its reference.

    score(model, batches, tokens=8192, method="activation")   # capgap.prune.api.score

A ``depth_only`` method scores layers only: :func:`~capgap.prune.api.prune` then drops its
lowest-scoring layers until the model fits the target and keeps every layer's full width.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from capgap.errors import CapgapError

PASSES = ("none", "forward", "backward")  # what one calibration batch costs a method
# How a cut is spread over layers (capgap.prune.allocate): kept here, torch-free, so the
# CLI's parser can offer the choices without loading torch.
ALLOCATIONS = ("global", "uniform")  # heads/neurons ranked across layers; same counts per layer
DROP_RULES = ("symmetric", "score")  # depth: k bottom and k top layers; the k lowest-scoring


@dataclass(frozen=True)
class Method:
    """A string-named scoring method (see the module docstring)."""

    name: str
    summary: str  # one line, shown by ``capgap prune --help``
    impl: str  # "module:function"; data methods take (model, batches, tokens, progress),
    #            data-free ones (model, seed)
    calibration: str  # one of PASSES
    depth_only: bool = False

    @property
    def needs_data(self) -> bool:
        return self.calibration != "none"


METHODS: dict[str, Method] = {}
DEFAULT_METHOD = "expressiveness"


def register_method(method: Method) -> Method:
    """Add ``method`` to :data:`METHODS` (a name may be registered once)."""
    if method.name in METHODS:
        raise ValueError(f"pruning method {method.name!r} is already registered")
    if method.calibration not in PASSES:
        raise ValueError(f"calibration must be one of {PASSES}, got {method.calibration!r}")
    METHODS[method.name] = method
    return method


def get_method(name: str) -> Method:
    """The registered method ``name``, or a one-line CapgapError listing the choices."""
    if name not in METHODS:
        raise CapgapError(f"unknown pruning method {name!r}; choose from {', '.join(METHODS)}")
    return METHODS[name]


def help_lines() -> str:
    """One line per method: name, summary and cost, for ``--help``."""
    width = max(map(len, METHODS))
    cost = {"none": "no data", "forward": "fwd", "backward": "fwd+bwd"}
    return "\n".join(f"  {m.name:<{width}}  {m.summary} [{cost[m.calibration]}]"
                     for m in METHODS.values())


def score_method(
    model: Any,
    method: str = DEFAULT_METHOD,
    batches: Iterable | None = None,
    tokens: int | None = None,
    progress: bool = False,
    seed: int = 0,
) -> Any:
    """Scores of ``model`` by ``method``; their meta records the method and its cost.

    ``meta`` gets ``method``, ``depth_only``, ``seconds`` (wall time of the scoring),
    ``calibration_tokens`` and ``calibration_batches`` (0 for data-free methods).
    """
    m = get_method(method)
    if m.needs_data and batches is None:
        raise CapgapError(f"pruning method {m.name!r} needs calibration batches")
    module, func = m.impl.split(":")
    fn = getattr(importlib.import_module(module), func)
    start = time.perf_counter()
    scores = fn(model, batches, tokens=tokens, progress=progress) if m.needs_data else fn(model, seed=seed)
    seconds = round(time.perf_counter() - start, 3)
    scores.meta |= {"method": m.name, "depth_only": m.depth_only, "calibration": m.calibration,
                    "seconds": seconds}
    scores.meta.setdefault("calibration_tokens", 0)
    scores.meta.setdefault("calibration_batches", 0)
    return scores


for _m in (
    Method("expressiveness", "mean |dL/dmask| per unit and layer (the paper, arXiv 2311.07052)",
           "capgap.prune.scores:compute_scores", "backward"),
    Method("activation", "mean |activation| per unit, layers by BI (Minitron, arXiv 2407.14679)",
           "capgap.prune.importance:activation_scores", "forward"),
    Method("taylor", "sum of |w * dL/dw| over each unit's weights (LLM-Pruner, arXiv 2305.11627)",
           "capgap.prune.importance:taylor_scores", "backward"),
    Method("block_influence", "depth only: drop layers of lowest 1 - cos(in, out) (ShortGPT, arXiv 2403.03853)",
           "capgap.prune.importance:block_influence_scores", "forward", depth_only=True),
    Method("magnitude", "L2 norm of each unit's weights (data-free baseline)",
           "capgap.prune.scores:magnitude_scores", "none"),
    Method("random", "seeded uniform random scores (data-free baseline)", "capgap.prune.scores:random_scores",
           "none"),
):
    register_method(_m)
