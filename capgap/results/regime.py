"""Which regime a sweep measured in, and whether its answer rests on interior optima.

A capacity-gap answer means something only where teachers are trained (a bigger teacher is a
better one) and mostly transformer (pruning keeps a body to distil into), and where a best
teacher lies inside the grid. This module says, from the teachers' ``regime.json`` rows and
a fitted ``law.json``, which is the case; ``capgap pilot`` prints it and writes it beside the
law. Thresholds: :data:`~capgap.results.defaults.TRAINED_TOKENS_PER_PARAM` and
:data:`~capgap.results.defaults.LOW_EMBEDDING`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from capgap.errors import CapgapError
from capgap.results.defaults import LOW_EMBEDDING, TRAINED_TOKENS_PER_PARAM

REGIME = "regime.json"  # what a pretrained family writes beside its sizes
TEACHER_LOSSES = "teacher_losses.json"  # a sweep's teachers scored on its students' eval text


def find_regime(path: str | Path) -> Path | None:
    """The ``regime.json`` that *path* names: the file itself, a pretrained family's folder,
    or a sweep/study folder whose ``teachers/`` capgap pretrained; ``None`` when there is none."""
    path = Path(path)
    for candidate in (path, path / REGIME, path / "teachers" / REGIME):
        if candidate.is_file():
            return candidate
    return None


def read_regime(path: str | Path) -> list[dict[str, Any]]:
    """The pretrained teachers' rows (name, params, val_loss, tokens_per_param,
    embedding_fraction, ...) from :func:`find_regime`'s file, else from an older sweep's
    ``teachers/DONE.json``; empty when the sweep was given existing models.

    Raises :class:`CapgapError` when the file is there but is not a regime file."""
    found = find_regime(path)
    if found is not None:
        try:
            teachers = json.loads(found.read_text(encoding="utf-8"))["teachers"]
            if not isinstance(teachers, list):
                raise TypeError("'teachers' is not a list")
        except (ValueError, KeyError, TypeError) as e:
            raise CapgapError(f"{found}: not a regime file ({e})") from None
        return teachers
    done = Path(path) / "teachers" / "DONE.json"
    if not done.is_file():
        return []
    return [{"name": r["name"], "params": r["params"],
             "tokens_per_param": r["train_tokens"] / r["params"],
             "embedding_fraction": 1 - r["params_non_embedding"] / r["params"]}
            for r in json.loads(done.read_text(encoding="utf-8")).get("results", [])]


def measured_teachers(sweep_dir: str | Path) -> tuple[dict[str, float], dict[str, float]] | None:
    """A sweep's teachers scored on its students' eval text (``DIR/teacher_losses.json``):
    (losses, sizes) by name, or None where the sweep wrote none (or an older one without
    names)."""
    path = Path(sweep_dir) / TEACHER_LOSSES
    if not path.is_file():
        return None
    try:
        teachers = json.loads(path.read_text(encoding="utf-8")).get("teachers")
        if not teachers:
            return None
        return ({n: float(t["loss"]) for n, t in teachers.items()},
                {n: float(t["params"]) for n, t in teachers.items()})
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise CapgapError(f"{path}: not a teacher-loss file ({e})") from None


def teacher_losses(path: str | Path) -> tuple[dict[str, float], dict[str, float]]:
    """Teachers' held-out losses and sizes (name -> value each) from *path*'s regime.json
    (see :func:`find_regime`), as the budget-aware law wants them."""
    found = find_regime(path)
    if found is None:
        raise CapgapError(f"{path}: no {REGIME} (a family pretrained by capgap pretrain, or a "
                          "sweep folder whose teachers it pretrained)")
    try:
        teachers = read_regime(found)
        losses = {str(t["name"]): float(t["val_loss"]) for t in teachers}
        params = {str(t["name"]): float(t["params"]) for t in teachers}
    except (ValueError, KeyError, TypeError) as e:
        raise CapgapError(f"{found}: not a regime file ({e})") from None
    return losses, params


def describe_regime(teachers: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """How trained, how embedding-heavy and how finely spaced the teachers are, and the
    regime's name: ``trained, low-embedding`` when every teacher meets both thresholds,
    else ``micro`` with the reasons."""
    if not teachers:
        return {"name": "given models", "teachers": 0,
                "reasons": ["teachers were given, not pretrained: their training is unknown"]}
    params = sorted(float(t["params"]) for t in teachers)
    tpp = [float(t["tokens_per_param"]) for t in teachers]
    emb = [float(t["embedding_fraction"]) for t in teachers]
    steps = [b / a for a, b in zip(params, params[1:], strict=False)]
    reasons = []
    if min(tpp) < TRAINED_TOKENS_PER_PARAM:
        reasons.append(f"under-trained ({min(tpp):.2g} < {TRAINED_TOKENS_PER_PARAM:g} "
                       "tokens/param)")
    if max(emb) > LOW_EMBEDDING:
        reasons.append(f"embedding-heavy ({max(emb):.0%} > {LOW_EMBEDDING:.0%} of parameters)")
    return {"name": "micro" if reasons else "trained, low-embedding", "reasons": reasons,
            "teachers": len(params), "params": [params[0], params[-1]],
            "span": params[-1] / params[0], "max_step": max(steps) if steps else None,
            "tokens_per_param": [min(tpp), max(tpp)], "embedding_fraction": [min(emb), max(emb)]}


def describe_answer(law: Mapping[str, Any] | None) -> dict[str, Any]:
    """Per student size of a ``law.json``: its best teacher and whether that optimum is
    interior or censored at an edge of the teacher grid; the law's status beside."""
    sizes = (law or {}).get("sizes") or []
    rows = [{"student": s.get("label"), "best": s.get("optimum"), "ratio": s.get("ratio"),
             "censored": s.get("censored_edge") if s.get("censored") else None} for s in sizes]
    interior = [r for r in rows if r["censored"] is None]
    return {"law": (law or {}).get("status", "missing"), "sizes": rows,
            "interior": len(interior), "censored": len(rows) - len(interior),
            "kind": ("no optimum" if not rows else "interior" if len(interior) == len(rows)
                     else "censored" if not interior else "mixed")}


def regime_line(regime: Mapping[str, Any]) -> str:
    """:func:`describe_regime`'s verdict in one line: name, sizes, spacing, training,
    embeddings and any reasons it is not the trained, low-embedding regime."""
    if regime["teachers"]:
        lo, hi = regime["params"]
        t_lo, t_hi = regime["tokens_per_param"]
        e_lo, e_hi = regime["embedding_fraction"]
        line = (f"regime: {regime['name']} - {regime['teachers']} teachers {lo / 1e6:.3g}M-"
                f"{hi / 1e6:.3g}M ({regime['span']:.1f}x, steps up to {regime['max_step'] or 1:.2f}x), "
                f"{_span(t_lo, t_hi, '.2g')} tokens/param, embeddings {_span(e_lo, e_hi, '.0%')}")
    else:
        line = f"regime: {regime['name']}"
    return line + (f"; {', '.join(regime['reasons'])}" if regime["reasons"] else "")


def _span(lo: float, hi: float, fmt: str) -> str:
    """``lo-hi`` in ``fmt``, or one value where both print the same (``20``, not ``20-20``)."""
    a, b = format(lo, fmt), format(hi, fmt)
    return a if a == b else f"{a}-{b}"


def regime_lines(regime: Mapping[str, Any], answer: Mapping[str, Any]) -> list[str]:
    """The two facts in words: which regime, and what the answer rests on."""
    lines = [regime_line(regime)]
    censored = [f"{r['student']} ({r['censored']} edge)" for r in answer["sizes"] if r["censored"]]
    inner = [f"{r['student']} (T*/S {r['ratio']:.2f})" for r in answer["sizes"]
             if not r["censored"] and r["ratio"] is not None]
    lines.append(f"answer: {answer['kind']} - law {answer['law']}; interior optimum at "
                 f"{answer['interior']} of {len(answer['sizes'])} student sizes"
                 + (f": {', '.join(inner)}" if inner else "")
                 + (f"; censored: {', '.join(censored)}" if censored else ""))
    return lines
