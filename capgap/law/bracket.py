"""Where the best teacher can lie on a coarse teacher grid: a bound on T*/S, not a fit.

A fit needs >= 3 student sizes whose best teacher is inside the teacher range; a small sweep
often has fewer, yet its curves still say something. If a size's metric is unimodal in the
teacher size, its true optimum lies strictly between the neighbours of the best teacher run.
Teachers whose mean is within ``signal`` × noise of the best are **tied** (noise: the largest
seed standard deviation of the size, or ``tie_floor`` when that is larger or unmeasured), and
the bracket spans the neighbours of all of them, so a difference the seeds cannot resolve
widens the bound instead of moving it. A best teacher at the low edge is bounded below by the
student itself (ratio 1); one at the high edge is unbounded above.

The ratios that every size allows — the intersection of the brackets — are the ratios a
single T* = k·S could have. An empty intersection rejects one common ratio for these sizes
(H3 fails even allowing for the grid); a non-empty one bounds k, and says whether a reference
ratio (the paper's ~2.5) is inside the bound.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from capgap.law.optimum import SizeCurve
from capgap.results.defaults import SIGNAL
from capgap.results.optimum import seed_noise


def size_bracket(curve: SizeCurve, sign: float, tie_floor: float = 0.0,
                 signal: float = SIGNAL) -> dict[str, Any]:
    """The bracket of one size: its tied best teachers and the open interval (lo, hi) that
    holds its optimum, in parameters and as T/S (``hi`` None when unbounded)."""
    means = sign * curve.means
    noise = seed_noise(curve.sds, tie_floor).value
    best = float(means.min())
    tied = np.flatnonzero(means <= best + signal * noise)
    first, last = int(tied.min()), int(tied.max())
    s = curve.student_params
    lo = float(curve.teachers[first - 1]) if first > 0 else s
    hi = float(curve.teachers[last + 1]) if last + 1 < curve.teachers.size else None
    return {"student_params": s, "tied": curve.teachers[tied].tolist(), "noise": noise,
            "lo": lo, "hi": hi, "ratio_lo": lo / s, "ratio_hi": None if hi is None else hi / s}


def ratio_bracket(curves: list[SizeCurve], sign: float, tie_floor: float = 0.0,
                  signal: float = SIGNAL, reference: float | None = None) -> dict[str, Any]:
    """Every size's bracket and their intersection (see the module docstring)."""
    sizes = [size_bracket(c, sign, tie_floor, signal) for c in curves if c.teachers.size > 1]
    out: dict[str, Any] = {"rule": f"best teacher's neighbours; teachers within {signal:g} x "
                                   f"noise (floor {tie_floor:g}) of the best count as tied",
                           "sizes": sizes, "n_sizes": len(sizes), "common": None,
                           "consistent": None, "reference": reference, "reference_inside": None}
    if not sizes:
        return out
    lo = max(b["ratio_lo"] for b in sizes)
    his = [b["ratio_hi"] for b in sizes if b["ratio_hi"] is not None]
    hi = min(his) if his else math.inf
    consistent = lo < hi
    out |= {"consistent": consistent if len(sizes) > 1 else None,
            "common": [lo, None if math.isinf(hi) else hi] if consistent else None}
    if reference is not None and consistent:
        out["reference_inside"] = bool(lo < reference < hi)
    return out


def ratio_text(law: dict[str, Any]) -> str:
    """A fitted proportional law, ``T* = 2.4·S [2.1, 2.9]`` (``no interval`` when every
    bootstrap replicate was undefined)."""
    ci = law.get("ratio_ci")
    return (f"T* = {law['ratio']:.3g}·S "
            + (f"[{ci[0]:.3g}, {ci[1]:.3g}]" if ci else "(no interval)"))


def common_text(b: dict[str, Any] | None) -> str | None:
    """The ratio every size admits, ``(1.25, 3.68)x`` (``inf`` when unbounded), or None."""
    common = (b or {}).get("common")
    if not common:
        return None
    lo, hi = common
    return f"({lo:.2f}, " + ("inf" if hi is None else f"{hi:.2f}") + ")x"


def bracket_text(b: dict[str, Any]) -> str:
    """``T*/S in (1.25, 3.68)x by 3 size(s); 2.5x is inside (brackets S 0.3M (1.00, 3.74);
    ...)``, or why there is no common ratio."""
    if not b or not b.get("n_sizes"):
        return "no size with two or more teachers"
    per = "; ".join(f"S {s['student_params'] / 1e6:.3g}M ({s['ratio_lo']:.2f}, "
                    + ("inf" if s["ratio_hi"] is None else f"{s['ratio_hi']:.2f}") + ")"
                    for s in b["sizes"])
    if b["common"] is None:
        return f"no single T*/S fits every size (brackets {per})"
    ref = ("" if b.get("reference_inside") is None else
           f"; {b['reference']:g}x is {'inside' if b['reference_inside'] else 'outside'}")
    return f"T*/S in {common_text(b)} by {b['n_sizes']} size(s){ref} (brackets {per})"
