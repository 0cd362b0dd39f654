"""The study's cross-part synthesis as text lines and figures (computed by
:mod:`capgap.results.synthesis`): where the best teacher sits per budget, every teacher
against the smallest, the same-init control and scratch students beside the paper's, the
objectives side by side."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from capgap.law.holdout import MIN_SEEDS, slice_line
from capgap.law.plot import pyplot
from capgap.report.html import ratio_axis, save_figure
from capgap.results.defaults import PAPER_RATIO, SIGNAL
from capgap.results.optimum import best_index
from capgap.units import format_size


def _m(x: float) -> str:
    return f"{x / 1e6:.3g}M"


def optimum_line(g: dict[str, Any]) -> str:
    """``S 0.3M, 2,000,000 tok: best T2 (1.84M, 6.1x), inside the range, beats the smallest
    teacher by 0.012 (noise 0.004)``."""
    where = ("only one teacher so far" if g["censored"] == "both" else
             f"censored at the {g['censored']} edge" if g["censored"] else "inside the range")
    beat = ("" if g["censored"] in ("low", "both") else
            f", beats the smallest teacher by {g['margin_vs_smallest']:.3f}")
    gain = ""
    if g.get("best_gain") is not None:
        i = g["teachers"].index(g["best_gain"])
        edge = g["best_gain_edge"]
        gain = (f"; largest gain over its baseline: {g['best_gain']} ({g['gain'][i]:+.3f}"
                + (f", {edge} edge)" if edge in ("low", "high") else ")"))
    n = len(g["seeds"])
    return (f"S {_m(g['student_target'])}, {g['tokens']:,} tok, {n} seed{'s' * (n != 1)}: "
            f"best {g['best']} ({_m(g['best_params'])}, {g['ratio']:.2f}x), {where}{beat} "
            f"(noise {_noise_text(g)}){gain}")


def relative_line(g: dict[str, Any]) -> str:
    """``S 0.3M, 150,000 tok, vs T0: T1 +0.431, T2 +0.811``: each teacher's loss minus the smallest
    teacher's (negative: better than the smallest)."""
    rel = ", ".join(f"{t} {x - g['loss'][0]:+.3f}"
                    for t, x in zip(g["teachers"][1:], g["loss"][1:], strict=True))
    return (f"S {_m(g['student_target'])}, {g['tokens']:,} tok, vs {g['teachers'][0]}: "
            + (rel or "one teacher"))


def _noise_text(g: dict[str, Any]) -> str:
    """``0.0040`` measured, ``0.0040, floor`` unmeasured, or ``0.0040, floor; seeds 0.0021``
    when the measured seed spread is under the floor."""
    sd = g.get("noise_seed_sd")
    if not g["noise_measured"] or sd is None:
        return f"{g['noise']:.4f}, floor"
    return f"{g['noise']:.4f}" + ("" if sd >= g["noise"] else f", floor; seeds {sd:.4f}")


def control_line(c: dict[str, Any]) -> list[str]:
    """A few lines on one group set beside the paper's students (a control or scratch)."""
    effect = "exceeds" if c["teacher_effect"] else "does not exceed"
    short = c["label"].split(" (")[0]
    lines = [f"S {_m(c['student_target'])}, {c['label']}, {c['tokens']:,} tok: "
             f"loss spread across teachers {c['spread']:.3f} {effect} {SIGNAL:g} x noise "
             f"{c['noise']:.4f}; best teacher {c['best']} (own-pruned best: {c['own_best']})"]
    for t in c["teachers"]:
        own = "-" if t["own_loss"] is None else f"{t['own_loss']:.3f}"
        cg = "-" if t["control_gain"] is None else f"{t['control_gain']:+.3f}"
        og = "-" if t["own_gain"] is None else f"{t['own_gain']:+.3f}"
        lines.append(f"    {t['teacher']} ({_m(t['teacher_params'])}): {short} "
                     f"{t['control_loss']:.3f} (gain {cg}); own-pruned {own} (gain {og})")
    return lines


def budget_figure(budget: list[dict[str, Any]], path: str | Path,
                  brackets: dict[int, list[float | None]] | None = None) -> bool:
    """Best teacher / student against the budget, one line per size; hollow markers where
    the optimum is censored; ``brackets`` (budget -> the T*/S range every size allows, from
    the pooled law) as grey boxes. False (nothing written) without at least one row."""
    if not budget:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.2))
    sizes = sorted({g["student_target"] for g in budget})
    for i, s in enumerate(sizes):
        mine = [g for g in budget if g["student_target"] == s]
        colour = f"C{i}"
        shift = 1.06 ** (i - (len(sizes) - 1) / 2)  # sizes side by side at one budget
        xs = [g["tokens"] * shift for g in mine]
        ax.plot(xs, [g["ratio"] for g in mine], "-", color=colour, label=f"S {_m(s)}")
        for x, g in zip(xs, mine, strict=True):
            lo, hi = (t / g["student_target"] for t in (g["teacher_params"][0],
                                                        g["teacher_params"][-1]))
            ax.vlines(x, lo, hi, color=colour, lw=1, alpha=0.35)  # the teachers tried
            ax.plot(x, g["ratio"], "o", color=colour, mfc="none" if g["censored"] else colour)
    for i, (tokens, common) in enumerate(sorted((brackets or {}).items())):
        if common:
            hi = common[1] if common[1] is not None else ax.get_ylim()[1]
            ax.fill_between([tokens / 1.15, tokens * 1.15], common[0], hi, color="k",
                            alpha=0.1, lw=0, label=None if i else "T*/S every size allows")
    ax.axhline(PAPER_RATIO, color="k", ls=":", lw=1, label=f"paper ~{PAPER_RATIO:g}x")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("distillation budget (tokens)")
    ax.set_ylabel("best teacher / student (total params)")
    ratio_axis(ax.yaxis)
    _label_ticks(ax.xaxis, {g["tokens"] for g in budget}, format_size)
    ax.set_title("Best teacher per budget (bars: teachers tried; hollow: at an edge)",
                 fontsize=10)
    save_figure(fig, ax, Path(path))
    return True


def penalty_figure(budget: list[dict[str, Any]], path: str | Path) -> bool:
    """Every teacher's distilled loss minus the smallest teacher's, against T/S, one panel per
    student size, one line per budget (bars: seed sd where measured; grey: within 3 x noise
    of zero). Below zero the larger teacher wins; a budget's curve sinking is the optimum
    moving up before the argmin changes. Symlog y: pruning penalties near 1.5 nats and
    margins of 0.02 in one view. False (nothing written) without a row."""
    if not budget:
        return False
    plt = pyplot()
    sizes = sorted({g["student_target"] for g in budget})
    budgets = sorted({g["tokens"] for g in budget})
    fig, axes = plt.subplots(1, len(sizes), figsize=(4.4 * len(sizes), 3.8), squeeze=False)
    for ax, s in zip(axes[0], sizes, strict=True):
        mine = [g for g in budget if g["student_target"] == s]
        noise = max(g["noise"] for g in mine)
        ax.axhspan(-SIGNAL * noise, SIGNAL * noise, color="k", alpha=0.1, lw=0,
                   label=f"within {SIGNAL:g} x noise")
        for g in mine:
            colour = f"C{budgets.index(g['tokens'])}"
            xs = [t / s for t in g["teacher_params"]]
            ys = [x - g["loss"][0] for x in g["loss"]]
            err = [sd or 0.0 for sd in g["seed_sd"]]
            ax.errorbar(xs, ys, yerr=err if any(err) else None, fmt="o-", ms=4, capsize=2,
                        color=colour, label=f"{format_size(g['tokens'])} tok")
            j = best_index(ys)
            ax.plot(xs[j], ys[j], "*", ms=12, color=colour, mec="black")
        ax.axvline(PAPER_RATIO, color="k", ls=":", lw=1, label=f"paper ~{PAPER_RATIO:g}x")
        ax.set_xscale("log")
        ratio_axis(ax.xaxis)
        ax.set_yscale("symlog", linthresh=0.05)
        ax.set_xlabel("teacher / student (total params)")
        ax.set_ylabel("loss − smallest teacher's (nats, symlog)")
        ax.set_title(f"S {_m(s)} (★ best teacher per budget)", fontsize=9)
    _save_panels(fig, axes[0], path)
    return True


def control_figure(control: list[dict[str, Any]], path: str | Path) -> bool:
    """The evidence of a control (or scratch) comparison: distilled loss against teacher
    size, one panel per group — the group (solid) beside students pruned from each teacher
    (dashed), best of each starred. False (nothing written) without a group."""
    if not control:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(control), figsize=(4.6 * len(control), 3.8), squeeze=False)
    for ax, c in zip(axes[0], control, strict=True):
        t = [x["teacher_params"] for x in c["teachers"]]
        for key, style, label in (("control_loss", "o-", c["label"]),
                                  ("own_loss", "s--", "pruned from each teacher (paper)")):
            pts = [(ti, x[key]) for ti, x in zip(t, c["teachers"], strict=True)
                   if x[key] is not None]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            line = ax.plot(xs, ys, style, ms=4, label=label)[0]
            best = best_index(ys)
            ax.plot(xs[best], ys[best], "*", ms=13, color=line.get_color(), mec="black")
        ax.set_xscale("log")
        _label_ticks(ax.xaxis, t, _m)  # label the teachers, not the decades
        ax.set_xlabel("teacher size (total params)")
        ax.set_ylabel("distilled val loss (lower is better)")
        ax.set_title(f"S {_m(c['student_target'])}, {c['tokens']:,} tok, {c['objective']}",
                     fontsize=9)
    _save_panels(fig, axes[0], path)
    return True


def objectives_figure(groups: list[dict[str, Any]], path: str | Path) -> bool:
    """Gain over the no-teacher baseline against teacher size, one panel per (budget,
    student size), one line per objective, best loss starred. False without groups."""
    panels = sorted({(g["tokens"], g["student_target"]) for g in groups})
    if not panels:
        return False
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6), squeeze=False)
    for ax, (tokens, size) in zip(axes[0], panels, strict=True):
        mine = [g for g in groups if (g["tokens"], g["student_target"]) == (tokens, size)]
        for i, g in enumerate(mine):
            pts = [(t, x) for t, x in zip(g["teacher_params"], g["gain"], strict=True)
                   if x is not None]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, "o-", ms=4, color=f"C{i}", label=g["objective"])
            if g["best_params"] in xs:
                j = xs.index(g["best_params"])
                ax.plot(xs[j], ys[j], "*", ms=12, color=f"C{i}", mec="black")
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xscale("log")
        _label_ticks(ax.xaxis, {t for g in mine for t in g["teacher_params"]}, _m)
        ax.tick_params(axis="x", labelsize=7)
        ax.set_xlabel("teacher size (total params)")
        ax.set_ylabel("gain over no-teacher baseline (nats)")
        ax.set_title(f"S {_m(size)}, {tokens:,} tok (★ lowest loss)", fontsize=9)
    _save_panels(fig, axes[0], path)
    return True


def _label_ticks(axis: Any, values: Iterable[float], fmt: Any) -> None:
    """Major ticks at exactly ``values`` (teachers, budgets), labelled by ``fmt``; no minors."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # as pyplot()

    axis.set_major_locator(FixedLocator(sorted(values)))
    axis.set_major_formatter(FuncFormatter(lambda x, _: fmt(x)))
    axis.set_minor_formatter(NullFormatter())


def _save_panels(fig: Any, axes: Any, path: str | Path) -> None:
    """Legend and grid on every panel, then the report's figure finish on the last."""
    for ax in axes[:-1]:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_figure(fig, axes[-1], Path(path))


def holdout_figure(record: dict[str, Any] | None, path: str | Path) -> bool:
    """The budget-aware law on cells it never saw (``holdout.json``): predicted against
    measured loss per held-out cell (distilled dots, baselines crosses; the diagonal is a
    perfect prediction). False (nothing written) without held-out cells."""
    cells = (record or {}).get("cells") or []
    if not cells:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.4))
    for distilled, marker, label in ((True, "o", "distilled"), (False, "x", "no-teacher baseline")):
        pts = [(c["measured"], c["predicted"]) for c in cells
               if (c["teacher_loss"] is not None) == distilled]
        if pts:
            xs, ys = zip(*pts, strict=True)
            ax.plot(xs, ys, marker, ms=5, ls="none", label=label)
    lo = min(min(c["measured"], c["predicted"]) for c in cells)
    hi = max(max(c["measured"], c["predicted"]) for c in cells)
    ax.plot([lo, hi], [lo, hi], "-", color="grey", lw=1, label="prediction = measurement")
    ax.set_xlabel("measured held-out loss (seed mean, nats)")
    ax.set_ylabel("predicted by the law fitted without it")
    mae, noise = record.get("mae_nats"), record.get("seed_noise_nats")
    ax.set_title(f"held out: {', '.join(f'{k} {v}' for k, v in record['hold_out'].items())}; "
                 f"mae {mae:.3f}" + (f", seed noise {noise:.4f}" if noise else ""), fontsize=9)
    _save_panels(fig, [ax], path)
    return True


def holdout_lines(summary: dict[str, Any]) -> list[str]:
    """The held-out check's headline and one line per held-out (size, budget) slice."""
    if summary.get("status") != "ok":
        return [f"not yet: {summary.get('reason', 'no held-out cells')}"]
    noise = summary.get("seed_noise_nats")
    lines = [f"fitted on {summary['fit_cells']} cells, {summary['held_out_cells']} held out: "
             f"mae {summary['mae_nats']:.4f} nats, seed noise "
             + (f"{noise:.4f}" if noise is not None else f"not measured (no cell has {MIN_SEEDS} seeds)")
             + f"; best teacher right in {summary['argmin_agreement']:.0%} of held-out slices "
             f"({summary['argmin_within_noise']:.0%} within {SIGNAL:g} x noise)"]
    if summary.get("teacher_losses_from"):
        lines.append("teachers' losses: " + " and ".join(summary["teacher_losses_from"]))
    return lines + [slice_line(s) for s in summary.get("slices", [])]
