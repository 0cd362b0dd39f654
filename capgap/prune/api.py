"""The pruning API: score once, prune to any size, save, load.

    scores = score(model, batches, tokens=65536)          # one calibration pass
    result = prune(model, scores, sparsity=0.6)           # or target_params=...
    save_pruned(result, tokenizer, "out/student")         # vanilla or capgap format
    model, tokenizer = load_pruned("out/student")         # capgap.models.pruned.load_pruned
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from capgap.errors import CapgapError
from capgap.models.arch import ParamTable, adapter_for
from capgap.models.params import count_params
from capgap.models.pruned import KeepPlan, materialize, save_pruned_model
from capgap.prune.allocate import (
    allocate,
    allocate_depth,
    paper_component_sparsity,
    resolve_layers,
)
from capgap.prune.methods import ALLOCATIONS, DEFAULT_METHOD, score_method
from capgap.prune.scores import Scores


@dataclass
class PruneResult:
    """The pruned model, its plan and the report written as ``prune_report.json``."""

    model: nn.Module
    plan: KeepPlan
    report: dict


def score(
    model: nn.Module,
    batches: Iterable | None = None,
    tokens: int | None = None,
    progress: bool = False,
    method: str = DEFAULT_METHOD,
    seed: int = 0,
) -> Scores:
    """Scores of ``model`` by a named ``method`` (:mod:`capgap.prune.methods`; default the
    paper's expressiveness) over calibration ``batches`` (data-free methods need none),
    stopping after ``tokens`` tokens. ``seed`` seeds the ``random`` method."""
    return score_method(model, method, batches, tokens=tokens, progress=progress, seed=seed)


def _target(before: int, sparsity: float | None, target_params: int | None) -> tuple[int, float]:
    if (sparsity is None) == (target_params is None):
        raise CapgapError("give exactly one of sparsity and target_params")
    if sparsity is not None:
        if not 0.0 <= float(sparsity) < 1.0:
            raise CapgapError(f"sparsity must be in [0, 1), got {sparsity}")
        return round((1.0 - sparsity) * before), float(sparsity)
    if int(target_params) <= 0:
        raise CapgapError(f"target params must be positive, got {target_params}")
    if int(target_params) > before:
        raise CapgapError(f"target {int(target_params):,} params is larger than the model ({before:,} params)")
    return int(target_params), 1.0 - int(target_params) / before


def check(
    model: nn.Module,
    sparsity: float | None = None,
    target_params: int | None = None,
    allocation: str = "global",
    multiple: int = 1,
    drop_layers: int | list[int] | None = None,
    drop_rule: str = "symmetric",
    depth_only: bool = False,
) -> None:
    """Raise the CapgapError :func:`prune` would raise for these settings, before scoring.

    Feasibility (size range, rounding, shape rules, depth) does not depend on the scores, so
    it is checked with placeholder scores and costs milliseconds. ``depth_only``: the
    settings are for a depth-only method (e.g. ``block_influence``).
    """
    adapter = adapter_for(model)
    geo = adapter.geometry(model)
    if allocation not in ALLOCATIONS:
        raise CapgapError(f"unknown allocation '{allocation}'; choose from {', '.join(ALLOCATIONS)}")
    target, _ = _target(count_params(model).total, sparsity, target_params)
    if depth_only:
        _refuse_drop_layers(drop_layers)
        allocate_depth(torch.ones(geo.n_layers), ParamTable.from_model(model, adapter), target)
        return
    ones = {"heads": torch.ones(geo.n_layers, geo.n_kv), "neurons": torch.ones(geo.n_layers, geo.ffn),
            "hidden": torch.ones(geo.hidden), "layers": torch.ones(geo.n_layers)}
    layers = resolve_layers(geo.n_layers, drop_layers, drop_rule, ones["layers"])
    allocate(
        Scores.from_raw(ones, {}), ParamTable.from_model(model, adapter), adapter, target=target,
        allocation=allocation, multiple=multiple, layers=layers,
        tolerance=0.01 if target_params is not None else None,
    )


def prune(
    model: nn.Module,
    scores: Scores,
    sparsity: float | None = None,
    target_params: int | None = None,
    allocation: str = "global",
    multiple: int = 1,
    drop_layers: int | list[int] | None = None,
    drop_rule: str = "symmetric",
    inplace: bool = False,
) -> PruneResult:
    """Prune ``model`` to ``sparsity`` (of total params) or to ``target_params`` (±1 %).

    ``allocation``: ``global`` (paper's pilot; per-layer counts differ) or ``uniform``
    (same counts in every layer; vanilla config). ``multiple``: kept hidden dims and FFN
    neurons round to it. ``drop_layers``: ``k`` with ``drop_rule="symmetric"`` drops k
    bottom and k top layers (MiniMA); with ``"score"`` the k layers of lowest layer-mask
    score; a list drops those layer ids. Depth and width combine: width is solved after
    dropping so the total lands on the target. ``inplace`` reuses ``model``'s storage.
    """
    start = time.perf_counter()
    adapter = adapter_for(model)
    geo = adapter.geometry(model)
    if allocation not in ALLOCATIONS:
        raise CapgapError(f"unknown allocation '{allocation}'; choose from {', '.join(ALLOCATIONS)}")
    scores.check_fits(geo, model.config.model_type)
    before = count_params(model)
    target, target_sparsity = _target(before.total, sparsity, target_params)
    table = ParamTable.from_model(model, adapter)
    if scores.meta.get("depth_only"):
        _refuse_drop_layers(drop_layers)
        alloc, allocation = allocate_depth(scores.layers, table, target), "uniform"
        drop_layers, drop_rule = geo.n_layers - len(alloc.plan.layers), scores.meta.get("method", "score")
    else:
        layers = resolve_layers(geo.n_layers, drop_layers, drop_rule, scores.layers)
        alloc = allocate(
            scores, table, adapter, target=target, allocation=allocation, multiple=multiple, layers=layers,
            tolerance=0.01 if target_params is not None else None,
        )
    small = materialize(model, alloc.plan, allocation, inplace=inplace)
    after = count_params(small)
    if after.total != alloc.params:  # the analytic count is what the search trusted
        raise AssertionError(f"analytic count {alloc.params} != count_params {after.total}")
    report = _report(
        before, after, target, target_sparsity, alloc, geo, scores, allocation, multiple, drop_layers, drop_rule
    )
    report["seconds"] = {"score": scores.meta.get("seconds"), "prune": round(time.perf_counter() - start, 3)}
    return PruneResult(small, alloc.plan, report)


def _refuse_drop_layers(drop_layers: int | list[int] | None) -> None:
    if drop_layers:
        raise CapgapError("a depth-only method chooses the layers to drop itself; "
                          "leave out drop_layers (--drop-layers, --drop-layer-ids)")


def _scoring(scores: Scores) -> dict:
    """Which method made the scores and what it cost."""
    meta = scores.meta
    return {"method": scores.method, "calibration": meta.get("calibration"), "seconds": meta.get("seconds"),
            "calibration_tokens": meta.get("calibration_tokens", 0),
            "calibration_batches": meta.get("calibration_batches", 0)}


def _report(before, after, target, target_sparsity, alloc, geo, scores, allocation, multiple, drop_layers, drop_rule) -> dict:  # noqa: ANN001
    plan = alloc.plan
    p_paper = paper_component_sparsity(target_sparsity)
    return {
        "params_before": before.total,
        "params_after": after.total,
        "params_before_total": before.total,
        "params_after_total": after.total,
        "params_before_non_embedding": before.non_embedding,
        "params_after_non_embedding": after.non_embedding,
        "target_params": target,
        "target_sparsity": round(target_sparsity, 6),
        "achieved_sparsity": round(1.0 - after.total / before.total, 6),
        "component_sparsity_paper": round(p_paper, 6),
        "component_sparsity": {"hidden_and_heads": round(1 - alloc.keep_width, 6), "ffn": round(1 - alloc.keep_ffn, 6)},
        "allocation": allocation,
        "multiple": multiple,
        "binding_constraint": alloc.binding,
        "hidden_kept": plan.d,
        "hidden_before": geo.hidden,
        "layers_kept": list(plan.layers),
        "layers_before": geo.n_layers,
        "layer_drop": {"rule": _drop_rule_name(drop_layers, drop_rule), "arg": drop_layers},
        "heads_kept_per_layer": [g * geo.group_size for g in plan.groups],
        "kv_groups_kept_per_layer": plan.groups,
        "heads_per_layer_before": geo.n_heads,
        "neurons_kept_per_layer": plan.ffn,
        "neurons_per_layer_before": geo.ffn,
        "calibration_tokens": scores.meta.get("calibration_tokens"),
        "calibration_batches": scores.meta.get("calibration_batches"),
        "arch": scores.meta.get("arch"),
        "method": scores.method,
        "scoring": _scoring(scores),
    }


def _drop_rule_name(drop_layers: int | list[int] | None, drop_rule: str) -> str | None:
    if not drop_layers:
        return None
    return "explicit" if isinstance(drop_layers, (list, tuple)) else drop_rule


def save_pruned(
    pruned: PruneResult | nn.Module,
    tokenizer: object | None,
    out_dir: str | Path,
    export: str = "auto",
    overwrite: bool = False,
    scores: Scores | None = None,
) -> Path:
    """Write a pruned model (a :class:`PruneResult` or a model it produced, e.g. after
    distillation), its tokenizer and ``prune_report.json`` into ``out_dir`` (atomically).

    ``export``: ``auto`` — vanilla HF checkpoint for uniform plans, capgap format for global
    ones; ``vanilla`` — always a vanilla checkpoint (global plans zero-padded, exact);
    ``capgap`` — always the capgap format. ``scores`` (optional) are saved in ``scores/``
    so further students of the same model need no new calibration pass. ``prune_plan.json``
    records which heads, neurons, hidden dims and layers of the original were kept.
    """
    model = pruned.model if isinstance(pruned, PruneResult) else pruned
    report = dict(pruned.report) if isinstance(pruned, PruneResult) else {}
    extra = None if scores is None else lambda folder: scores.save(folder / "scores")
    return save_pruned_model(model, tokenizer, out_dir, export=export, overwrite=overwrite,
                             report=report, extra=extra)
