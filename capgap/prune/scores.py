"""Scores (one value per head/KV group, FFN neuron, hidden dim and layer), the
expressiveness pass, data-free baselines and what every scoring pass shares.

:class:`Scores` is what every method of :mod:`capgap.prune.methods` returns. Expressiveness
(the paper's): I = mean over calibration batches of |∂L/∂mask|. One pass over the
calibration tokens with all masks at one (the model's output unchanged) gives scores for
every head/KV group (ξ), FFN neuron (ν), hidden dim (μ) and layer (λ). As in the paper's code
(GeneZC/MiniMA), the absolute value is taken per *batch* gradient of the mean LM loss, so the
score granularity follows the batch size. Only the masks require gradients (weights are
frozen for the pass), so it costs less than a training step.

Whatever the method, each layer's head and neuron scores are divided by that layer's L2 norm
(the paper's normalisation, which lets heads and neurons be ranked across layers); μ is
divided by its norm (ranking unchanged). Layer scores stay raw: they are compared across
layers. Raw scores are kept too, so other normalisations can be tried without a new pass.

:meth:`Scores.save` writes ``scores.safetensors`` + ``scores.json`` so a whole ladder of
students at other sparsities reuses one pass.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from capgap.errors import CapgapError
from capgap.io import atomic_path, write_json
from capgap.models.arch import Adapter, Geometry, adapter_for
from capgap.models.arch.layout import head_index
from capgap.prune.masks import MaskSet, attach
from capgap.prune.methods import DEFAULT_METHOD

SCORES_FORMAT = "capgap-prune-scores/1"


@dataclass
class Scores:
    """Normalised and raw scores plus where they came from."""

    heads: torch.Tensor  # (L, G) per-layer L2-normalised
    neurons: torch.Tensor  # (L, F) per-layer L2-normalised
    hidden: torch.Tensor  # (D,) L2-normalised
    layers: torch.Tensor  # (L,) raw mean |∂L/∂λ|
    raw: dict[str, torch.Tensor] = field(default_factory=dict)  # heads/neurons/hidden unnormalised
    meta: dict = field(default_factory=dict)

    @classmethod
    def from_raw(cls, raw: dict[str, torch.Tensor], meta: dict) -> Scores:
        return cls(
            heads=_normalise_rows(raw["heads"]),
            neurons=_normalise_rows(raw["neurons"]),
            hidden=_normalise_rows(raw["hidden"][None])[0],
            layers=raw["layers"].clone(),
            raw={k: raw[k] for k in ("heads", "neurons", "hidden")},
            meta=meta,
        )

    @property
    def method(self) -> str:
        """The method that made these scores (older saved scores name only a baseline, or nothing)."""
        return self.meta.get("method") or self.meta.get("baseline") or DEFAULT_METHOD

    def check_fits(self, geo: Geometry, model_type: str) -> None:
        """CapgapError unless these scores were computed on a model of this shape."""
        want = {"layers": geo.n_layers, "kv_groups": geo.n_kv, "ffn": geo.ffn, "hidden": geo.hidden}
        have = {
            "layers": self.heads.shape[0],
            "kv_groups": self.heads.shape[1],
            "ffn": self.neurons.shape[1],
            "hidden": self.hidden.shape[0],
        }
        if want != have or self.meta.get("model_type", model_type) != model_type:
            raise CapgapError(
                f"scores do not fit this model: scores are for {self.meta.get('model_type')} {have}, "
                f"model is {model_type} {want}; score this model first"
            )

    def save(self, out_dir: str | Path) -> None:
        """Write ``scores.safetensors`` and ``scores.json`` into ``out_dir`` (atomically)."""
        out_dir = Path(out_dir)
        tensors = {"layers": self.layers} | {f"raw.{k}": v for k, v in self.raw.items()}
        tensors = {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in tensors.items()}
        with atomic_path(out_dir / "scores.safetensors") as tmp:
            save_file(tensors, str(tmp), metadata={"format": SCORES_FORMAT})
        write_json(out_dir / "scores.json", {"format": SCORES_FORMAT} | self.meta)

    @classmethod
    def load(cls, path: str | Path) -> Scores:
        """Load scores from a folder (or either of its two files)."""
        path = Path(path)
        folder = path if path.is_dir() else path.parent
        st, js = folder / "scores.safetensors", folder / "scores.json"
        if not st.exists() or not js.exists():
            raise CapgapError(f"no scores at {folder} (need scores.safetensors and scores.json)")
        meta = json.loads(js.read_text())
        if meta.pop("format", None) != SCORES_FORMAT:
            raise CapgapError(f"{js} is not a capgap scores file ({SCORES_FORMAT})")
        t = load_file(str(st))
        raw = {k.removeprefix("raw."): v for k, v in t.items() if k.startswith("raw.")}
        return cls.from_raw(raw | {"layers": t["layers"]}, meta)


def _normalise_rows(x: torch.Tensor) -> torch.Tensor:
    """Divide each row by its L2 norm (rows of zeros stay zero)."""
    norm = x.norm(dim=-1, keepdim=True)
    return x / torch.where(norm > 0, norm, torch.ones_like(norm))


def _as_batch(batch: object, device: torch.device) -> dict[str, torch.Tensor]:
    """A calibration batch: a (B, T) LongTensor of token ids or a dict with ``input_ids``."""
    if isinstance(batch, torch.Tensor):
        batch = {"input_ids": batch}
    elif isinstance(batch, (list, tuple)) and batch and isinstance(batch[0], torch.Tensor):
        batch = {"input_ids": batch[0]}
    if not isinstance(batch, dict) or "input_ids" not in batch:
        raise CapgapError("calibration batches must be (batch, seq) token-id tensors or dicts with input_ids")
    out = {k: v.to(device) for k, v in batch.items() if k in ("input_ids", "attention_mask", "labels")}
    if out["input_ids"].dim() == 1:
        out = {k: v[None] for k, v in out.items()}
    if "labels" not in out:
        labels = out["input_ids"].clone()
        if "attention_mask" in out:
            labels[out["attention_mask"] == 0] = -100
        out["labels"] = labels
    return out


def _n_tokens(batch: dict[str, torch.Tensor]) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Eval mode (no dropout: scores are a property of the model, not of a noise draw) and no
    weight gradients for a scoring pass; both are restored afterwards."""
    was_training = model.training
    grads = [p.requires_grad for p in model.parameters()]
    model.eval()
    model.requires_grad_(False)
    try:
        yield
    finally:
        model.train(was_training)
        for p, g in zip(model.parameters(), grads, strict=True):
            p.requires_grad_(g)


class CalibrationPass:
    """Iterate calibration batches (as dicts on ``device``) until ``tokens`` tokens are seen.

    Counts what it gave (``tokens_seen``, ``batches_seen``); refuses a budget below one batch
    and an empty set, with one-line errors.
    """

    def __init__(self, batches: Iterable, tokens: int | None, device: torch.device,
                 progress: bool = False, desc: str = "scoring") -> None:
        self.batches, self.tokens, self.device = batches, tokens, device
        self.progress, self.desc = progress, desc
        self.tokens_seen = self.batches_seen = 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        bar = _progress(self.progress, self.tokens, self.desc)
        try:
            for raw in self.batches:
                batch = _as_batch(raw, self.device)
                n = _n_tokens(batch)
                if self.tokens is not None and self.batches_seen == 0 and self.tokens < n:
                    raise CapgapError(
                        f"calibration tokens ({self.tokens}) are fewer than one batch ({n} tokens); "
                        "raise the token count or lower the batch size"
                    )
                yield batch
                self.tokens_seen += n
                self.batches_seen += 1
                if bar is not None:
                    bar.update(n)
                if self.tokens is not None and self.tokens_seen >= self.tokens:
                    break
        finally:
            if bar is not None:
                bar.close()
        if self.batches_seen == 0:
            raise CapgapError("calibration set is empty: it holds less than one batch")

    def meta(self, model: nn.Module, adapter: Adapter, start: float) -> dict:
        """What every data method records: model, geometry and the calibration it used."""
        return {
            "model_type": model.config.model_type,
            "arch": adapter.name,
            "geometry": adapter.geometry(model).__dict__,
            "calibration_tokens": self.tokens_seen,
            "calibration_batches": self.batches_seen,
            "seconds": round(time.perf_counter() - start, 3),
        }


def compute_scores(
    model: nn.Module,
    batches: Iterable,
    tokens: int | None = None,
    progress: bool = False,
) -> Scores:
    """Expressiveness scores (Zhang et al., *Towards the Law of Capacity Gap in Distilling
    Language Models*, arXiv 2311.07052; code GeneZC/MiniMA): mean over calibration batches of
    |∂L/∂mask| for every head/KV group, neuron, hidden dim and layer mask.

    Stops once ``tokens`` tokens are seen. Batches are (B, T) token-id tensors or dicts with
    ``input_ids`` (optionally ``attention_mask``, ``labels``). The model is left as it was
    (mode, requires_grad).
    """
    adapter = adapter_for(model)
    geo = adapter.geometry(model)
    device = next(model.parameters()).device
    masks = MaskSet.ones(geo, requires_grad=True, device=device)
    acc = {k: torch.zeros_like(v) for k, v in masks.tensors().items()}
    loss_sum = 0.0
    start = time.perf_counter()
    cal = CalibrationPass(batches, tokens, device, progress)
    with frozen(model), attach(model, masks, adapter):
        for batch in cal:
            loss = model(**batch).loss
            grads_now = torch.autograd.grad(loss, list(masks.tensors().values()))
            for a, g in zip(acc.values(), grads_now, strict=True):
                a += g.abs()
            loss_sum += float(loss.detach())
    raw = {k: (v / cal.batches_seen).detach().cpu() for k, v in acc.items()}
    meta = cal.meta(model, adapter, start) | {
        "mean_loss": loss_sum / cal.batches_seen,
        "normalisation": "heads and neurons: per-layer L2; hidden: L2; layers: raw",
        "estimator": "mean over batches of |d(mean LM loss)/d(mask)|",
    }
    return Scores.from_raw(raw, meta)


def _progress(enabled: bool, total: int | None, desc: str = "scoring"):  # noqa: ANN202 - tqdm or None
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="tok", desc=desc, leave=False)


BASELINES = ("random", "magnitude")


def baseline_scores(model: nn.Module, kind: str, seed: int = 0) -> Scores:
    """Data-free scores for ablations: ``magnitude`` (:func:`magnitude_scores`) or
    ``random`` (:func:`random_scores`)."""
    if kind not in BASELINES:
        raise CapgapError(f"unknown baseline '{kind}'; choose from {', '.join(BASELINES)}")
    return magnitude_scores(model) if kind == "magnitude" else random_scores(model, seed)


def random_scores(model: nn.Module, seed: int = 0) -> Scores:
    """I.i.d. uniform scores for every unit and layer (seeded): the floor any method must beat."""
    geo = adapter_for(model).geometry(model)
    g = torch.Generator().manual_seed(seed)
    raw = {"heads": torch.rand(geo.n_layers, geo.n_kv, generator=g),
           "neurons": torch.rand(geo.n_layers, geo.ffn, generator=g),
           "hidden": torch.rand(geo.hidden, generator=g), "layers": torch.rand(geo.n_layers, generator=g)}
    return Scores.from_raw(raw, {"model_type": model.config.model_type, "baseline": "random", "seed": seed})


def magnitude_scores(model: nn.Module, seed: int = 0) -> Scores:
    """Each unit's L2 weight norm, over every parameter slice that belongs to it (a head's
    q/k/v rows and output columns, a neuron's input rows and output column, a hidden dim's
    embedding column and every row/column reading or writing it); layers: sum of their head
    and neuron scores. Data-free; ``seed`` is unused (the registry's common signature)."""
    sq = unit_sums(model, lambda name, p: p.detach().double().pow(2))
    raw = {k: v.sqrt().float() for k, v in sq.items()}
    raw["layers"] = raw["heads"].sum(1) + raw["neurons"].sum(1)
    return Scores.from_raw(raw, {"model_type": model.config.model_type, "baseline": "magnitude"})


def unit_sums(model: nn.Module, values: Callable[[str, torch.Tensor], torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per unit, the sum of ``values(name, param)`` (elementwise, same shape as the parameter)
    over every parameter slice that belongs to the unit, as the adapter's axis tables say.

    Returns float64 ``heads`` (L, G), ``neurons`` (L, F), ``hidden`` (D,). A parameter axis
    indexed by hidden dims adds to ``hidden``; one indexed by heads adds to its KV group
    (any layout: separate q/k/v, fused ``[q|k|v]``, NeoX's interleaved heads); FFN axes add to
    their neuron (both halves of a fused ``[gate | up]``).
    """
    adapter = adapter_for(model)
    geo = adapter.geometry(model)
    sums = {"heads": torch.zeros(geo.n_layers, geo.n_kv, dtype=torch.float64),
            "neurons": torch.zeros(geo.n_layers, geo.ffn, dtype=torch.float64),
            "hidden": torch.zeros(geo.hidden, dtype=torch.float64)}
    group_rows = {}  # head-axis kind -> (G, rows per group) indices
    for name, p in model.named_parameters():
        layer, kinds = _param_kinds(name, adapter)
        v = values(name, p).double()
        for axis, k in enumerate(kinds):
            if k is None:
                continue
            per_index = (v.sum(dim=[a for a in range(v.dim()) if a != axis]) if v.dim() > 1 else v).cpu()
            if k.startswith("h_"):
                sums["hidden"] += per_index
            elif k == "ffn":
                sums["neurons"][layer] += per_index
            elif k == "ffn2":  # [gate | up]: both halves belong to the same neuron
                sums["neurons"][layer] += per_index.unflatten(0, (2, -1)).sum(0)
            else:  # head axes: fold each group's rows together (any layout: [q|k|v] too)
                if k not in group_rows:
                    group_rows[k] = torch.stack([head_index(k, torch.tensor([i]), geo, geo.n_kv)
                                                 for i in range(geo.n_kv)])
                sums["heads"][layer] += per_index[group_rows[k]].sum(dim=1)
    return sums


def _param_kinds(name: str, adapter) -> tuple[int | None, tuple]:  # noqa: ANN001
    if name in adapter.top_params:
        return None, adapter.top_params[name]
    idx, rel = name[len(adapter.layers) + 1 :].split(".", 1)
    return int(idx), adapter.layer_params[rel]
