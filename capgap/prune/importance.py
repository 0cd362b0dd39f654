"""Importance scores the pruning literature compares against expressiveness.

* :func:`block_influence_scores` — ShortGPT's Block Influence of each layer (depth only);
* :func:`activation_scores` — Minitron's activation magnitudes (forward passes only);
* :func:`taylor_scores` — LLM-Pruner's first-order Taylor importance of the weights.

All find heads, neurons, norms and layers through the architecture adapter, so they work for
every registered family; all return :class:`~capgap.prune.scores.Scores` (KV groups, not
query heads, under GQA: a KV head and its query heads stand or fall together, as everywhere
in capgap). Token averages weight each token by the batch's ``attention_mask`` (padding
counts for nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from capgap.models.arch import Adapter, adapter_for, require_unpruned
from capgap.prune.scores import CalibrationPass, Scores, frozen, unit_sums


def block_influence_scores(model: nn.Module, batches: Iterable, tokens: int | None = None,
                           progress: bool = False) -> Scores:
    """Block Influence (Men et al., *ShortGPT: Layers in Large Language Models are More
    Redundant Than You Expect*, arXiv 2403.03853): BI_l = 1 − mean over calibration tokens of
    cos(x_l, x_{l+1}), the layer's input and output hidden state at each position.

    A layer that barely turns the residual stream scores near 0 and goes first. Layers only:
    the method is ``depth_only``, so :func:`~capgap.prune.api.prune` drops the lowest layers
    until the target size is reached and keeps every layer's full width (head, neuron and
    hidden scores are placeholders of ones).
    """
    stats = _forward_stats(model, batches, tokens, progress, width=False)
    geo = stats["geo"]
    raw = {"heads": torch.ones(geo.n_layers, geo.n_kv), "neurons": torch.ones(geo.n_layers, geo.ffn),
           "hidden": torch.ones(geo.hidden), "layers": stats["layers"]}
    return Scores.from_raw(raw, stats["meta"] | {"estimator": "1 - mean token cos(layer input, layer output)"})


def activation_scores(model: nn.Module, batches: Iterable, tokens: int | None = None,
                      progress: bool = False) -> Scores:
    """Activation importance (Muralidharan et al., *Compact Language Models via Pruning and
    Knowledge Distillation* — Minitron, arXiv 2407.14679), forward passes only, no gradients:

    * head: mean over tokens of the L2 norm of the head's attention output (the input of the
      output projection, ``head_dim`` wide); a KV group sums its query heads;
    * neuron: mean |activation| at the input of the FFN down projection (after the
      activation function and, in gated FFNs, the gate);
    * hidden channel: mean |output| of every norm over the hidden dims (each layer's norms and
      the final norm), summed over those norms;
    * layer: Block Influence (as :func:`block_influence_scores`; Minitron uses it for depth).

    Minitron aggregates with an L2 norm over the batch and a mean over the sequence; capgap
    takes one mean over all calibration tokens, which does not depend on how they are batched.
    """
    stats = _forward_stats(model, batches, tokens, progress, width=True)
    raw = {k: stats[k] for k in ("heads", "neurons", "hidden", "layers")}
    return Scores.from_raw(raw, stats["meta"] | {"estimator": "mean |activation| per unit; layers: Block Influence"})


def taylor_scores(model: nn.Module, batches: Iterable, tokens: int | None = None,
                  progress: bool = False) -> Scores:
    """First-order Taylor importance (Ma et al., *LLM-Pruner: On the Structural Pruning of
    Large Language Models*, arXiv 2305.11627; element-wise, summed per group):
    I(unit) = Σ over the unit's weights of |w · ∂L/∂w|, the first-order estimate of the loss
    change from zeroing each weight.

    ∂L/∂w is the gradient of the mean LM loss averaged over calibration batches (as LLM-Pruner
    accumulates it over its samples), then multiplied by the weights. A unit's weights are
    every slice the adapter assigns to it (:func:`~capgap.prune.scores.unit_sums`). Layer
    scores: the sum of the layer's head and neuron scores. Costs one forward+backward per
    batch and one gradient buffer the size of the model.
    """
    require_unpruned(model)
    adapter = adapter_for(model)
    device = next(model.parameters()).device
    start = time.perf_counter()
    cal = CalibrationPass(batches, tokens, device, progress, desc="taylor")
    names = [n for n, _ in model.named_parameters()]
    loss_sum = 0.0
    with frozen(model):
        params = list(model.parameters())
        model.requires_grad_(True)  # restored by frozen()
        acc = [torch.zeros_like(p) for p in params]
        for batch in cal:
            loss = model(**batch).loss
            for a, g in zip(acc, torch.autograd.grad(loss, params), strict=True):
                a += g
            loss_sum += float(loss.detach())
    grads = {n: a / cal.batches_seen for n, a in zip(names, acc, strict=True)}
    sums = unit_sums(model, lambda name, p: (p.detach().double() * grads[name].double()).abs())
    raw = {k: v.float() for k, v in sums.items()}
    raw["layers"] = raw["heads"].sum(1) + raw["neurons"].sum(1)
    meta = cal.meta(model, adapter, start) | {
        "mean_loss": loss_sum / cal.batches_seen,
        "estimator": "sum over each unit's weights of |w * mean-over-batches dL/dw|"}
    return Scores.from_raw(raw, meta)


def _forward_stats(model: nn.Module, batches: Iterable, tokens: int | None, progress: bool,
                   width: bool) -> dict:
    """One no-grad pass with hooks: Block Influence per layer and, with ``width``, mean
    activation magnitudes per KV group, neuron and hidden channel (all token means)."""
    require_unpruned(model)
    adapter = adapter_for(model)
    geo = adapter.geometry(model)
    device = next(model.parameters()).device
    acc = {"layers": torch.zeros(geo.n_layers, dtype=torch.float64)}
    if width:
        acc |= {"heads": torch.zeros(geo.n_layers, geo.n_kv, dtype=torch.float64),
                "neurons": torch.zeros(geo.n_layers, geo.ffn, dtype=torch.float64),
                "hidden": torch.zeros(geo.hidden, dtype=torch.float64)}
    weights: dict[str, torch.Tensor | None] = {}  # "keep": this batch's (B, T) real tokens (None: all)
    start = time.perf_counter()
    cal = CalibrationPass(batches, tokens, device, progress, desc="activations" if width else "block influence")
    n_tokens = 0.0
    handles = _stat_hooks(model, adapter, acc, weights, width)
    try:
        with frozen(model), torch.no_grad():
            for batch in cal:
                mask = batch.get("attention_mask")
                weights["keep"] = None if mask is None or bool(mask.all()) else mask.bool()
                n_tokens += float(mask.sum()) if mask is not None else batch["input_ids"].numel()
                model(input_ids=batch["input_ids"], attention_mask=mask)
    finally:
        for h in handles:
            h.remove()
    means = {k: (v / n_tokens).float() for k, v in acc.items()}
    means["layers"] = 1.0 - means["layers"]  # mean cos -> Block Influence
    return means | {"geo": geo, "meta": cal.meta(model, adapter, start)}


def _stat_hooks(model: nn.Module, adapter: Adapter, acc: dict[str, torch.Tensor],
                weights: dict[str, torch.Tensor], width: bool) -> list:
    """Forward hooks adding each batch's token-weighted sums into ``acc`` (see _forward_stats)."""
    geo = adapter.geometry(model)

    def add(key: str, index: int | None, x: torch.Tensor) -> None:
        # x: (B, T, ...) -> its sum over the real tokens, accumulated in float64
        keep = weights["keep"]
        # trap: a padded position can be NaN (a fully masked attention row), so select, not weight
        x = _wide(x).flatten(0, 1) if keep is None else _wide(x)[keep.to(x.device)]  # (N, ...)
        total = x.sum(0).double().cpu()
        if index is None:
            acc[key] += total
        else:
            acc[key][index] += total

    def layer_hooks(i: int) -> tuple[Callable, Callable]:
        seen: dict[str, torch.Tensor] = {}

        def pre(module: nn.Module, args: tuple, kwargs: dict) -> None:
            seen["x"] = args[0] if args else kwargs["hidden_states"]  # (B, T, D)

        def post(module: nn.Module, args: tuple, kwargs: dict, out: object) -> None:
            y = out[0] if isinstance(out, tuple) else out  # (B, T, D)
            x = seen.pop("x")
            add("layers", i, F.cosine_similarity(_wide(x), _wide(y), dim=-1))  # (B, T)

        return pre, post

    def heads_hook(i: int) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            x = args[0].unflatten(-1, (geo.n_kv, geo.group_size, geo.head_dim))  # (B, T, G, r, hd)
            add("heads", i, _wide(x).norm(dim=-1).sum(dim=-1))  # (B, T, G)

        return hook

    def neurons_hook(i: int) -> Callable:
        def hook(module: nn.Module, args: tuple) -> None:
            add("neurons", i, args[0].abs())  # (B, T, F)

        return hook

    def norm_hook(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        add("hidden", None, out.abs())  # (B, T, D)

    handles = []
    for i, layer in enumerate(adapter.layer_list(model)):
        pre, post = layer_hooks(i)
        handles.append(layer.register_forward_pre_hook(pre, with_kwargs=True))
        handles.append(layer.register_forward_hook(post, with_kwargs=True))
        if width:
            handles.append(layer.get_submodule(adapter.attn_out).register_forward_pre_hook(heads_hook(i)))
            handles.append(layer.get_submodule(adapter.mlp_out).register_forward_pre_hook(neurons_hook(i)))
            handles += [layer.get_submodule(n).register_forward_hook(norm_hook) for n in adapter.norms]
    if width:
        handles.append(model.get_submodule(adapter.final_norm).register_forward_hook(norm_hook))
    return handles


def _wide(x: torch.Tensor) -> torch.Tensor:
    """At least float32 (a bf16 model's statistics are not taken in bf16)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))
