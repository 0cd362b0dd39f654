"""Plot a fitted law: per-size metric-vs-teacher curves and the T*-vs-S fit with its band.

matplotlib is imported on first use (:func:`pyplot`, Agg backend) so importing
``capgap.law`` stays cheap and works without a display.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from capgap.errors import CapgapError
from capgap.io import atomic_path
from capgap.law.cells import AS_GIVEN
from capgap.units import format_size

FORMATS = ("png", "pdf", "svg")


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the Agg backend (no display needed), imported on first use:
    it takes ~1 s, which ``import capgap.law`` and every CLI command would otherwise pay."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_law(law: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write the figure of ``law`` to ``path`` (.png, .pdf or .svg), atomically."""
    path = Path(path)
    fmt = path.suffix.lower().lstrip(".")
    if fmt not in FORMATS:
        raise CapgapError(f"{path}: plot format must be one of {', '.join(FORMATS)}")
    plt = pyplot()
    curves = [s for s in law.get("sizes", []) if "teachers" in s]
    ncols = 2 if curves else 1
    fig, axes = plt.subplots(1, ncols, figsize=(6 * ncols, 4.5), squeeze=False)
    if curves:
        _plot_curves(axes[0, 0], curves, law)
    _plot_fit(axes[0, -1], law)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, dpi=150)
    plt.close(fig)
    return path


def _plot_curves(ax: Any, sizes: list[Mapping[str, Any]], law: Mapping[str, Any]) -> None:
    """Metric vs teacher size for each student size; best teacher starred, vertex ticked."""
    plt = pyplot()
    si = law.get("size_unit") != AS_GIVEN
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(sizes)))
    for size, color in zip(sizes, colors, strict=True):
        t = np.asarray(size["teachers"], dtype=float)
        m = np.asarray(size["metric_mean"], dtype=float)
        sd = np.array([v or 0.0 for v in size["metric_sd"]], dtype=float)
        label = f"S={format_size(size['student_params'], si)}"
        style = "--" if size["censored"] else "-"
        ax.errorbar(t, m, yerr=sd, fmt=style, marker="o", ms=3, color=color, capsize=2,
                    label=label + (" (censored)" if size["censored"] else ""))
        best = int(np.argmin(np.abs(t - size["argmin"])))
        ax.plot(t[best], m[best], "*", ms=12, color=color, mec="black")
        if size.get("continuous_optimum"):
            ax.axvline(size["continuous_optimum"], color=color, ls=":", lw=1)
    metric = law.get("metric") or {}
    better = "higher" if metric.get("higher_is_better") else "lower"
    _log_size_axes(ax, "x", law)
    ax.set_xlabel(f"teacher size ({law.get('size_unit', '')})")
    ax.set_ylabel(f"{metric.get('name', 'metric')} ({better} is better)")
    ax.set_title("per student size (★ best teacher, dotted: quadratic vertex)", fontsize=9)
    ax.legend(fontsize=7)


def _plot_fit(ax: Any, law: Mapping[str, Any]) -> None:
    """Best teacher vs student size: used points, censored points, both laws, the band."""
    si = law.get("size_unit") != AS_GIVEN
    _plot_bracket(ax, law)
    _plot_points(ax, law)
    if law.get("status") == "ok":
        s = np.asarray([p[0] for p in law["points"]], dtype=float)
        grid = np.geomspace(s.min() / 1.5, s.max() * 1.5, 200)
        line = law["slope"] * grid + law["intercept"]
        sign = "+" if law["intercept"] >= 0 else "-"
        ok = line > 0  # log axes: the linear law may dip below 0 at small S
        r2 = f"{law['r2']:.3f}" if law["r2"] is not None else "n/a"
        ax.plot(grid[ok], line[ok], "-", color="C0",
                label=f"T* = {law['slope']:.3g}·S {sign} {format_size(abs(law['intercept']), si)}"
                f" (R² {r2})")
        ax.plot(grid, law["ratio"] * grid, "--", color="C1", label=f"T* = {law['ratio']:.3g}·S")
        band = _band(law, grid)
        if band is not None:
            floor = float(np.min([p[1] for p in law["points"]])) / 10  # log axis: no band <= 0
            ax.fill_between(grid, np.maximum(band[0], floor), band[1], color="C0", alpha=0.2,
                            label=f"{law.get('ci_level', 0.95):.0%} CI ({law['ci_method']})")
        title = f"capacity-gap law on {law['n_points']} sizes"
    else:
        title = f"no law: {law.get('reason')}"
    _log_size_axes(ax, "xy", law)
    unit = law.get("size_unit", "")
    ax.set_xlabel(f"student size S ({unit})")
    ax.set_ylabel(f"best teacher size T* ({unit})")
    ax.set_title(textwrap.shorten(title, 70), fontsize=9)
    ax.legend(fontsize=7)


def _plot_bracket(ax: Any, law: Mapping[str, Any]) -> None:
    """Each size's bracket as a grey bar (an arrow where unbounded above), the ratios every
    bracket allows as a shaded wedge, and the paper's ratio as a dotted line."""
    b = law.get("bracket") or {}
    sizes = b.get("sizes") or []
    if not sizes:
        return
    x = np.array([s["student_params"] for s in sizes])
    top = max(max(s["hi"] or s["lo"] for s in sizes), float(np.max(x))) * 2
    for i, s in enumerate(sizes):
        hi = s["hi"] if s["hi"] is not None else top
        ax.vlines(s["student_params"], s["lo"], hi, color="gray", lw=5, alpha=0.3,
                  label=None if i else "where each size's optimum can lie")
        if s["hi"] is None:
            ax.annotate("", (s["student_params"], top), (s["student_params"], top / 1.6),
                        arrowprops={"arrowstyle": "->", "color": "gray"})
    grid = np.geomspace(x.min() / 1.5, x.max() * 1.5, 50)
    if b.get("common"):
        lo, hi = b["common"]
        ax.fill_between(grid, lo * grid, (hi if hi is not None else top / x.min()) * grid,
                        color="C2", alpha=0.12,
                        label=f"T*/S every bracket allows: ({lo:.2f}, "
                              + ("inf" if hi is None else f"{hi:.2f}") + ")")
    if b.get("reference"):
        ax.plot(grid, b["reference"] * grid, ":", color="k", lw=1,
                label=f"paper {b['reference']:g}·S")


def _plot_points(ax: Any, law: Mapping[str, Any]) -> None:
    sizes = law.get("sizes", [])
    used = [s for s in sizes if s.get("used_in_fit")]
    left = [s for s in sizes if not s.get("used_in_fit") and s.get("optimum") is not None]
    if used:
        x = np.array([s["student_params"] for s in used])
        y = np.array([s["optimum"] for s in used])
        err = _yerr(used, y)
        ax.errorbar(x, y, yerr=err, fmt="o", color="black", capsize=3, label="best teacher")
    if left:
        ax.plot([s["student_params"] for s in left], [s["optimum"] for s in left], "o",
                mfc="none", color="gray", label="censored / left out")


def _yerr(sizes: list[Mapping[str, Any]], y: np.ndarray) -> np.ndarray | None:
    """Asymmetric error bars from each size's T* interval (zero where there is none)."""
    cis = [s.get("t_opt_ci") for s in sizes]
    if not any(cis):
        return None
    lo = np.array([yi - c[0] if c else 0.0 for yi, c in zip(y, cis, strict=True)])
    hi = np.array([c[1] - yi if c else 0.0 for yi, c in zip(y, cis, strict=True)])
    return np.vstack([np.maximum(lo, 0), np.maximum(hi, 0)])


def _band(law: Mapping[str, Any], grid: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Pointwise percentile band of a·S + b over the stored bootstrap replicates."""
    boot = law.get("bootstrap") or {}
    if not boot.get("slope"):
        return None
    values = np.outer(boot["slope"], grid) + np.asarray(boot["intercept"])[:, None]  # (B, G)
    tail = 100 * (1 - law.get("ci_level", 0.95)) / 2
    lo, hi = np.percentile(values, [tail, 100 - tail], axis=0)
    return lo, hi



def _log_size_axes(ax: Any, which: str, law: Mapping[str, Any]) -> None:
    """Log scale on the ``which`` axes ("x", "xy"), sizes printed as 1M, 2.5M, ..., and no
    crowded minor labels."""
    from matplotlib.ticker import FuncFormatter, NullFormatter  # on first use, as pyplot()

    si = law.get("size_unit") != AS_GIVEN
    for name in which:
        getattr(ax, f"set_{name}scale")("log")
        axis = getattr(ax, f"{name}axis")
        axis.set_major_formatter(FuncFormatter(lambda x, _: format_size(x, si)))
        axis.set_minor_formatter(NullFormatter())
