"""From scores and a size target to a :class:`~capgap.models.pruned.KeepPlan`.

Sparsity is relative to the project's size count (total parameters, tied once). Hidden
sparsity multiplies with head/neuron sparsity, so the paper gives every component the
same sparsity p' = 1 − √(1 − p). Embeddings shrink only with the hidden width, so that
split misses p; we keep the equal split as the starting point and *solve* for it:

1. a coarse-then-fine grid over the common keep fraction k (hidden, heads and neurons all
   keep ≈ k) finds the shapes closest to the target;
2. holding hidden width and heads, a bisection over the FFN keep fraction absorbs what
   rounding left (FFN neurons are the finest-grained unit).

Everything is counted analytically (:class:`~capgap.models.arch.ParamTable`), so the search
materialises nothing.

Allocations
    ``global``  heads (KV groups) and neurons are ranked across layers by their per-layer
                normalised scores; layers keep different counts, possibly zero (the paper's
                pilot setting). Hidden dims: top-d by μ.
    ``uniform`` every layer keeps the same number of heads and neurons, each layer its own
                top-scoring ones (MiniMA's 7B→3B). Shapes are restricted to what a vanilla
                config can express (see ``Adapter.shape_rule``).

Rounding: kept hidden dims and FFN neurons are multiples of ``multiple`` (or the unpruned
size); heads are whole heads (one KV group at a time under GQA).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

import torch

from capgap.errors import CapgapError
from capgap.models.arch import Adapter, Geometry, ParamTable
from capgap.models.pruned import KeepPlan
from capgap.prune.methods import ALLOCATIONS, DROP_RULES
from capgap.prune.scores import Scores

COARSE, FINE = 100, 50  # stage-1 grid over the common keep fraction: 1e-2, then 2e-4 near the best


@dataclass
class Allocation:
    """A plan plus how it was found."""

    plan: KeepPlan
    params: int  # analytic total of the plan
    keep_width: float  # solved keep fraction of hidden dims and heads
    keep_ffn: float  # solved keep fraction of FFN neurons
    binding: str | None  # the constraint that limited how close we got (None: landed)


def paper_component_sparsity(p: float) -> float:
    """p' = 1 − √(1 − p): the paper's per-component sparsity for overall sparsity p."""
    return 1.0 - (1.0 - p) ** 0.5


def resolve_layers(
    n_layers: int, drop: int | list[int] | None, rule: str, layer_scores: torch.Tensor | None
) -> list[int]:
    """Kept layer indices. ``symmetric`` k drops k bottom and k top layers (MiniMA);
    ``score`` k drops the k layers of lowest score (mean |∂L/∂λ|); a list drops those ids."""
    if drop is None or (isinstance(drop, int) and drop == 0):
        return list(range(n_layers))
    if isinstance(drop, (list, tuple)):
        bad = [i for i in drop if not 0 <= int(i) < n_layers]
        if bad or len(set(drop)) >= n_layers:
            raise CapgapError(f"cannot drop layers {list(drop)} of a {n_layers}-layer model")
        return [i for i in range(n_layers) if i not in set(drop)]
    if rule not in DROP_RULES:
        raise CapgapError(f"unknown layer-drop rule '{rule}'; choose from {', '.join(DROP_RULES)}")
    k = int(drop)
    dropped_total = 2 * k if rule == "symmetric" else k
    if k < 0 or dropped_total >= n_layers:
        raise CapgapError(
            f"dropping {dropped_total} layers ({rule} {k}) leaves none of the model's {n_layers}"
        )
    if rule == "symmetric":
        return list(range(k, n_layers - k))
    order = torch.argsort(layer_scores, descending=True, stable=True)
    return sorted(order[: n_layers - k].tolist())


def _valid_counts(full: int, multiple: int) -> list[int]:
    """Allowed kept counts (> 0): multiples of ``multiple`` up to ``full``, and ``full`` itself."""
    return sorted({*range(multiple, full + 1, multiple), full})


def _nearest(valid: list[int], x: float) -> int:
    """The value of the sorted list ``valid`` nearest to ``x`` (ties go up)."""
    i = bisect.bisect_left(valid, x)
    options = valid[max(i - 1, 0) : i + 1]
    return min(options, key=lambda v: (abs(v - x), -v))


def _round_count(x: float, multiple: int, full: int, allow_zero: bool) -> int:
    """Nearest of {multiples of ``multiple`` <= full} ∪ {full} (∪ {0}) to ``x``; ties go up."""
    below = int(x // multiple) * multiple
    options = {v for v in (below, below + multiple) if v <= full} | {full}
    options = {v for v in options if v > 0 or allow_zero} or {min(multiple, full)}
    return min(options, key=lambda v: (abs(v - x), -v))


class Space:
    """All candidate shapes for one model, allocation and rounding rule."""

    def __init__(
        self,
        scores: Scores,
        geo: Geometry,
        adapter: Adapter,
        table: ParamTable,
        layers: list[int],
        allocation: str,
        multiple: int,
        tie: bool = True,
    ) -> None:
        if allocation not in ALLOCATIONS:
            raise CapgapError(f"unknown allocation '{allocation}'; choose from {', '.join(ALLOCATIONS)}")
        self.geo, self.adapter, self.table = geo, adapter, table
        self.layers, self.allocation, self.multiple = layers, allocation, multiple
        self.tie = tie and allocation == "uniform"  # vanilla shape rules bind uniform output
        heads, neurons = scores.heads[layers], scores.neurons[layers]  # (L', G), (L', F)
        self.head_order = torch.argsort(heads, dim=1, descending=True, stable=True)
        self.neuron_order = torch.argsort(neurons, dim=1, descending=True, stable=True)
        self.hidden_order = torch.argsort(scores.hidden, descending=True, stable=True)
        valid_d = _valid_counts(geo.hidden, multiple)
        if allocation == "global":
            self.head_layer_ids = _global_layer_ids(heads)
            self.neuron_layer_ids = _global_layer_ids(neurons)
            self.valid_d = {0: valid_d}
        else:  # per KV-group count, the hidden widths a vanilla config can hold
            self.valid_d = {}
            d_all = torch.tensor(valid_d)
            for g in range(1, geo.n_kv + 1):
                ok = d_all[adapter.hidden_ok(geo, d_all, g)].tolist() if self.tie else valid_d
                if ok:
                    self.valid_d[g] = ok
            self.valid_g = sorted(self.valid_d)

    def can_prune(self) -> bool:
        """Whether any shape smaller than the unpruned one is allowed."""
        geo = self.geo
        smaller_f = _round_count(0, self.multiple, geo.ffn, False) < geo.ffn
        smaller_d = any(v[0] < geo.hidden for v in self.valid_d.values())
        return bool(self.valid_d) and (smaller_f or smaller_d)

    def counts(self, keep_w: float, keep_f: float) -> tuple[int, list[int], list[int]]:
        """(hidden, per-layer KV groups, per-layer neurons) for keep fractions."""
        n, geo, m = len(self.layers), self.geo, self.multiple
        if self.allocation == "uniform":
            g = _nearest(self.valid_g, keep_w * geo.n_kv)
            d = _nearest(self.valid_d[g], keep_w * geo.hidden)
            f = _round_count(keep_f * geo.ffn, m, geo.ffn, allow_zero=False)
            return d, [g] * n, [f] * n
        d = _nearest(self.valid_d[0], keep_w * geo.hidden)
        g_total = round(keep_w * geo.n_kv * n)
        groups = torch.bincount(self.head_layer_ids[:g_total], minlength=n).tolist()
        f_total = round(keep_f * geo.ffn * n)
        raw_f = torch.bincount(self.neuron_layer_ids[:f_total], minlength=n).tolist()
        return d, groups, [_round_count(c, m, geo.ffn, allow_zero=True) for c in raw_f]

    def params(self, keep_w: float, keep_f: float) -> int:
        d, groups, ffn = self.counts(keep_w, keep_f)
        return self.table.count(d, groups, ffn).total

    def plan(self, keep_w: float, keep_f: float) -> KeepPlan:
        d, groups, ffn = self.counts(keep_w, keep_f)
        return KeepPlan(
            layers=list(self.layers),
            hidden=self.hidden_order[:d].sort().values,
            heads=[self.head_order[i, :g].sort().values for i, g in enumerate(groups)],
            neurons=[self.neuron_order[i, :f].sort().values for i, f in enumerate(ffn)],
        )


def _global_layer_ids(scores: torch.Tensor) -> torch.Tensor:
    """Layer position of each unit, units in descending score order across layers."""
    n_units = scores.shape[1]
    order = torch.argsort(scores.flatten(), descending=True, stable=True)
    return order // n_units


def _bisect_ffn(space: Space, keep_w: float, target: int, steps: int = 40) -> list[float]:
    """Keep fractions of FFN bracketing the target with the width fixed (params rise with it)."""
    lo, hi = 0.0, 1.0
    if space.params(keep_w, hi) <= target:
        return [hi]
    if space.params(keep_w, lo) >= target:
        return [lo]
    for _ in range(steps):
        mid = (lo + hi) / 2
        if space.params(keep_w, mid) < target:
            lo = mid
        else:
            hi = mid
    return [lo, hi]


def search(space: Space, target: int) -> tuple[float, float, int]:
    """(keep_w, keep_f, params) of the candidate closest to ``target`` params."""
    coarse = [i / COARSE for i in range(COARSE + 1)]
    best_coarse = sorted(coarse, key=lambda k: abs(space.params(k, k) - target))[:3]
    fine = {min(max(k + j / (COARSE * FINE), 0.0), 1.0) for k in best_coarse for j in range(-FINE, FINE + 1)}
    cands = sorted((abs(space.params(k, k) - target), k) for k in fine)
    # widths: the best few distinct (hidden, heads) shapes of stage 1
    widths: dict[tuple, float] = {}
    for _, k in cands:
        d, groups, _ = space.counts(k, k)
        widths.setdefault((d, tuple(groups)), k)
        if len(widths) == 3:
            break
    best = None
    for keep_w in widths.values():
        for keep_f in [keep_w, *_bisect_ffn(space, keep_w, target)]:
            p = space.params(keep_w, keep_f)
            key = (abs(p - target), abs(keep_f - keep_w))  # ties: stay near the equal split
            if best is None or key < best[0]:
                best = (key, keep_w, keep_f, p)
    assert best is not None
    return best[1], best[2], best[3]


def allocate(
    scores: Scores,
    table: ParamTable,
    adapter: Adapter,
    *,
    target: int,
    allocation: str,
    multiple: int,
    layers: list[int],
    tolerance: float | None = None,
) -> Allocation:
    """Find the plan whose analytic size is closest to ``target`` total params.

    ``tolerance`` (relative, e.g. 0.01 for ``--target-params``): CapgapError naming the
    binding constraint if the closest valid shape is farther than that.
    """
    geo = table.geo
    if multiple < 1:
        raise CapgapError(f"--multiple must be a positive integer, got {multiple}")
    space = Space(scores, geo, adapter, table, layers, allocation, multiple)
    if target < table.count(geo.hidden, [geo.n_kv] * len(layers), [geo.ffn] * len(layers)).total:
        _check_some_shape(space, scores, table, adapter, layers)
    smallest = space.params(0.0, 0.0)
    if target < smallest:
        raise CapgapError(
            f"target {target:,} params is below the smallest valid student ({smallest:,} params: "
            f"{len(layers)} layers, minimal width under --multiple {multiple}); drop more layers or raise the target"
        )
    keep_w, keep_f, params = search(space, target)
    binding = _binding(space, scores, table, adapter, target, params, layers)
    err = abs(params - target) / target
    if tolerance is not None and err > tolerance:
        raise CapgapError(
            f"no valid shape within {tolerance:.0%} of {target:,} params: closest is {params:,} "
            f"({err:+.1%}); bound by {binding}"
        )
    return Allocation(space.plan(keep_w, keep_f), params, keep_w, keep_f, binding)


def allocate_depth(layer_scores: torch.Tensor, table: ParamTable, target: int) -> Allocation:
    """Depth only (a ``depth_only`` method such as Block Influence): keep the highest-scoring
    layers at full width, as many as fit in ``target`` params.

    The result lands at or below the target by less than one layer's parameters; the 1 %
    tolerance of width allocation does not apply (whole layers are the only unit).
    """
    geo = table.geo
    sizes = [table.count(geo.hidden, [geo.n_kv] * n, [geo.ffn] * n).total for n in range(geo.n_layers + 1)]
    fits = [n for n in range(1, geo.n_layers + 1) if sizes[n] <= target]
    if not fits:
        raise CapgapError(
            f"target {target:,} params is below the smallest depth-only student ({sizes[1]:,} params: "
            "one layer at full width); use a width method or raise the target"
        )
    n = max(fits)
    kept = sorted(torch.argsort(layer_scores, descending=True, stable=True)[:n].tolist())
    plan = KeepPlan(kept, torch.arange(geo.hidden), [torch.arange(geo.n_kv) for _ in kept],
                [torch.arange(geo.ffn) for _ in kept])
    binding = None if target - sizes[n] <= 1e-3 * target else "whole layers (depth-only method, full width kept)"
    return Allocation(plan, sizes[n], 1.0, 1.0, binding)


def _binding(
    space: Space, scores: Scores, table: ParamTable, adapter: Adapter, target: int, params: int, layers: list[int]
) -> str | None:
    """Which constraint kept the result from the target (None if within 0.1 %)."""
    err = abs(params - target)
    if err <= 1e-3 * target:
        return None
    relaxed = []
    if space.multiple > 1:
        s = Space(scores, space.geo, adapter, table, layers, space.allocation, 1, tie=space.tie)
        relaxed.append((abs(search(s, target)[2] - target), f"--multiple {space.multiple}"))
    if space.tie:
        s = Space(scores, space.geo, adapter, table, layers, space.allocation, space.multiple, tie=False)
        relaxed.append((abs(search(s, target)[2] - target), f"vanilla config shape: {adapter.shape_rule}"))
    better = [(e, why) for e, why in relaxed if e < err / 2]
    if better:
        return min(better)[1]
    return "granularity of whole heads and layers at this model size"


def _check_some_shape(space: Space, scores: Scores, table: ParamTable, adapter: Adapter, layers: list[int]) -> None:
    """CapgapError if the rounding multiple leaves no pruned shape; names the closest that does."""
    if space.can_prune():
        return
    geo = space.geo
    what = f"hidden {geo.hidden}, ffn {geo.ffn}, head_dim {geo.head_dim}"
    powers = [2**i for i in range(space.multiple.bit_length(), -1, -1) if 2**i < space.multiple]
    others = [m for m in range(space.multiple - 1, 0, -1) if m not in powers]
    for m in powers + others:  # suggest a power of two when one works
        if Space(scores, geo, adapter, table, layers, space.allocation, m).can_prune():
            raise CapgapError(
                f"--multiple {space.multiple} leaves no valid pruned {space.allocation} shape ({what}; "
                f"{adapter.shape_rule}); the closest valid multiple is {m}"
            )
    raise CapgapError(f"no valid pruned {space.allocation} shape for this model ({what}; {adapter.shape_rule})")
