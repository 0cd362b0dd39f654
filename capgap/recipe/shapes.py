"""MiniMA's shape rule, generalised: which depth and width a student of N parameters gets.

MiniMA-3B (arXiv 2311.07052) came from LLaMA2-7B by dropping the 4 bottom and 4 top layers
(32 -> 24) and cutting every width by the same 1/4: hidden 4096 -> 3072, heads 32 -> 24,
FFN 11008 -> 8192. We keep that recipe's two preferences and make them a search:

* depth is dropped *symmetrically* (k bottom + k top layers: the middle layers matter most);
* depth and width shrink by the *same* fraction ("drop 1/4 of layers and 1/4 of width"), and
  FFN follows the hidden width.

Among shapes within ``tolerance`` of the target we take the most balanced one (smallest
|ln depth_keep - ln width_keep| + |ln ffn_keep - ln width_keep|), then the closest.
Shapes stay loadable as vanilla Hugging Face checkpoints and GPU friendly: ``head_dim`` is
kept, heads shrink with the width (:func:`heads_at`), GQA keeps its query-per-KV group (so ``kv_heads`` shrinks
with ``heads``), hidden and FFN are multiples of 64/128/256 when the model is large enough.
Sizes use capgap's one definition (:mod:`capgap.models.params`): total, tied counted once.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from transformers import PretrainedConfig

from capgap.errors import CapgapError
from capgap.models.arch import Geometry, adapter_for, count_shape, geometry


@dataclass(frozen=True)
class Shape:
    """A student shape; ``layers_kept`` are teacher layer ids (bottom to top)."""

    layers_kept: list[int]
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    params: int
    target: int
    binding: str  # the constraint that sets how close ``params`` can get to ``target``

    @property
    def layers(self) -> int:
        return len(self.layers_kept)

    @property
    def error(self) -> float:
        """Relative distance to the target, signed."""
        return self.params / self.target - 1

    def to_dict(self) -> dict:
        return asdict(self) | {"layers": self.layers, "error": self.error}


def _total_params(config: PretrainedConfig, g: Geometry | None = None) -> int:
    """Total parameters of ``config`` reshaped to ``g`` (the registry's analytic count)."""
    return count_shape(config, g).total


def reshape_config(config: PretrainedConfig, shape: Shape) -> PretrainedConfig:
    """A vanilla config of ``config``'s architecture with ``shape``'s depth and width."""
    return adapter_for(config).vanilla_config(config, shape.hidden, shape.kv_heads, shape.ffn,
                                              shape.layers_kept)


def heads_at(g: Geometry, hidden: int) -> int:
    """Query heads of a student of width ``hidden``: the teacher's heads per hidden dim kept.

    With head_dim = hidden / heads (GPT-2, Pythia, Llama 2) this is ``hidden / head_dim``;
    families whose head_dim is decoupled (Qwen3: 16 heads x 128 on hidden 1024) keep their
    ratio of attention width to hidden width instead of losing heads faster than width."""
    return hidden * g.n_heads // g.hidden


def gpu_multiples(g: Geometry, multiple: int | None) -> tuple[int, int]:
    """(hidden step, FFN step). Hidden moves in whole GQA groups of heads, so its step is a
    multiple of the teacher's hidden per KV group; large models also round to tensor-core
    friendly sizes."""
    head_step = g.hidden // g.n_kv if g.hidden % g.n_kv == 0 else g.head_dim * g.group_size
    if multiple is None:
        h_mult = 128 if g.hidden >= 2048 else 64 if g.hidden >= 512 else 8
        f_mult = 256 if g.ffn >= 4096 else 64 if g.ffn >= 1024 else 8
    else:
        h_mult = f_mult = multiple
    return math.lcm(head_step, h_mult), f_mult


def minima_shape(
    config: PretrainedConfig,
    target_params: int,
    multiple: int | None = None,
    drop_layers: int | list[int] | None = None,
    tolerance: float = 0.01,
) -> Shape:
    """The MiniMA-style student shape of ``target_params`` cut from ``config``.

    ``multiple``: hidden and FFN round to it (default: 128/256 for large models, 64 for mid,
    8 for tiny; hidden also to whole heads x GQA group). ``drop_layers``: ``k`` drops k bottom
    and k top layers; a list drops those ids; ``None`` searches k. Raises when the target is
    not below the teacher's size, or no valid shape lands within ``tolerance`` (naming the
    closest size that does exist).
    """
    target_params = int(target_params)
    g = geometry(config)
    teacher = _total_params(config, g)
    if target_params >= teacher:
        raise CapgapError(f"target {target_params:,} is not smaller than the teacher "
                          f"({teacher:,} parameters)")
    h_step, f_step = gpu_multiples(g, multiple)
    candidates = [_candidate(config, g, kept, hidden, ffn)
                  for kept in _depths(g.n_layers, drop_layers)
                  for hidden in range(h_step, g.hidden + 1, h_step)
                  for ffn in _ffn_options(config, g, len(kept), hidden, f_step,
                                          target_params, tolerance)]
    inside = [c for c in candidates if abs(c[2] / target_params - 1) <= tolerance]
    if not inside:
        best = min(candidates, key=lambda c: abs(c[2] - target_params))
        raise CapgapError(
            f"no shape within {tolerance:.0%} of {target_params:,} parameters (hidden step "
            f"{h_step}, FFN step {f_step}, drop_layers {drop_layers}); the closest is "
            f"{best[2]:,} ({len(best[0])} layers, hidden {best[1].hidden}, FFN {best[1].ffn})")
    kept, geo, params = min(inside, key=lambda c: (_imbalance(g, len(c[0]), c[1]),
                                                   abs(c[2] - target_params)))
    return Shape(kept, geo.hidden, geo.n_heads, geo.n_kv, geo.ffn, params, target_params,
                 _binding(config, g, kept, geo, h_step, f_step, drop_layers is not None))


def _depths(n: int, drop_layers: int | list[int] | None) -> list[list[int]]:
    """Kept layer ids for each depth considered (symmetric drops unless ids are given)."""
    if isinstance(drop_layers, list):
        if not set(drop_layers) <= set(range(n)) or len(set(drop_layers)) >= n:
            raise CapgapError(f"drop_layers {drop_layers} must be distinct ids in 0..{n - 1}, "
                              "leaving at least one layer")
        return [[i for i in range(n) if i not in set(drop_layers)]]
    ks = range((n - 1) // 2 + 1) if drop_layers is None else [drop_layers]
    if drop_layers is not None and not 0 <= drop_layers <= (n - 1) // 2:
        raise CapgapError(f"drop_layers={drop_layers} per side leaves no layers of {n}")
    return [list(range(k, n - k)) for k in ks]


def _ffn_options(config: PretrainedConfig, g: Geometry, layers: int, hidden: int, f_step: int,
                 target: int, tolerance: float) -> range:
    """FFN sizes worth scoring at this depth and hidden: params are linear in the FFN width,
    so only those within ``tolerance`` of the target, or else the single nearest, qualify."""
    heads = heads_at(g, hidden)
    at = lambda f: _total_params(config, Geometry(layers, hidden, heads, heads // g.group_size,  # noqa: E731
                                                  g.head_dim, f))
    base, slope = at(f_step), (at(2 * f_step) - at(f_step)) / f_step
    top = g.ffn // f_step
    lo = math.ceil((target * (1 - tolerance) - base) / slope / f_step) + 1
    hi = math.floor((target * (1 + tolerance) - base) / slope / f_step) + 1
    lo, hi = max(lo, 1), min(hi, top)
    if lo > hi:  # nothing inside: the nearest multiple, for the "closest achievable" message
        lo = hi = min(max(round((target - base) / slope / f_step) + 1, 1), top)
    return range(lo * f_step, hi * f_step + 1, f_step)


def _candidate(config: PretrainedConfig, g: Geometry, kept: list[int], hidden: int,
               ffn: int) -> tuple[list[int], Geometry, int]:
    heads = heads_at(g, hidden)
    geo = Geometry(len(kept), hidden, heads, heads // g.group_size, g.head_dim, ffn)
    return kept, geo, _total_params(config, geo)


def _imbalance(teacher: Geometry, layers: int, s: Geometry) -> float:
    """How far a shape is from "same fraction off depth, width and FFN" (0 = MiniMA's rule)."""
    w = math.log(s.hidden / teacher.hidden)
    return abs(math.log(layers / teacher.n_layers) - w) + abs(math.log(s.ffn / teacher.ffn) - w)


def _binding(config: PretrainedConfig, g: Geometry, kept: list[int], s: Geometry, h_step: int,
             f_step: int, depth_fixed: bool) -> str:
    """The knob with the finest step at this shape: it bounds how exactly a target is hit."""
    base = _total_params(config, s)
    layer = base - _total_params(config, Geometry(s.n_layers - 1, *_width(s)))
    steps = {
        f"FFN multiple of {f_step}": base - _total_params(
            config, Geometry(s.n_layers, s.hidden, s.n_heads, s.n_kv, s.head_dim,
                             max(s.ffn - f_step, 1))),
        f"hidden multiple of {h_step} (whole GQA groups of {g.group_size} heads)":
            base - _shrink_hidden(config, g, s, h_step),
    }
    if not depth_fixed:
        steps["symmetric layer drops (2 layers)"] = 2 * layer
    steps = {k: v for k, v in steps.items() if v > 0}  # a knob already at its minimum has no step
    name, step = min(steps.items(), key=lambda kv: kv[1])
    return f"{name}: one step = {step / base:.1%} of the size"


def _width(s: Geometry) -> tuple[int, int, int, int, int]:
    return s.hidden, s.n_heads, s.n_kv, s.head_dim, s.ffn


def _shrink_hidden(config: PretrainedConfig, g: Geometry, s: Geometry, h_step: int) -> int:
    hidden = max(s.hidden - h_step, h_step)
    heads = heads_at(g, hidden)
    return _total_params(config, Geometry(s.n_layers, hidden, heads, heads // s.group_size,
                                         s.head_dim, s.ffn))
