"""``capgap report DIR``: a self-contained HTML page of a sweep (figures inlined as PNG data,
also written beside it), plus the law's figure from :func:`capgap.law.plot_law`.

One figure per student size: held-out loss against teacher size, distilled and baseline,
one line per setting — the rise-then-fall (or its absence) the law is built from; and the
loss against each cell's model FLOPs (teacher forward + student training + scoring), its
points also in ``loss_vs_flops.json``.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from capgap.io import atomic_path, write_json, write_text
from capgap.law.bracket import bracket_text
from capgap.law.plot import plot_law, pyplot
from capgap.report.tables import COLUMNS, COMPUTE_COLUMNS, TEACHER_COLUMNS, paired_table
from capgap.report.text import table
from capgap.results.accounting import compute_rows, flops_spent, status_counts, teacher_rows
from capgap.results.pairing import paired_rows
from capgap.results.rows import CellRow
from capgap.results.store import NAMES as STORE_COLUMNS
from capgap.results.store import read_rows, sweep_law

REPORT_DIR = "report"
CELLS_CSV = "cells.csv"
FLOPS_JSON = "loss_vs_flops.json"
FLOPS_IMAGE = "loss_vs_flops.png"
_PATH_COLUMNS = ("teacher_path", "student_path", "cell_dir", "model_dir")


def build_report(sweep_dir: str | Path) -> Path:
    """Write ``DIR/report/index.html`` and its PNGs; return the HTML path."""
    sweep_dir = Path(sweep_dir)
    rows = read_rows(sweep_dir)
    out = sweep_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    figures = [curve_figure(rows, target, out) for target in _targets(rows)]
    figures.append(gain_figure(rows, out))
    figures.append(flops_figure(rows, out))
    law = sweep_law(sweep_dir)
    if law is not None and law.get("status") not in ("error", "pending"):
        figures.append(_law_figure(law, out))
    write_cells_csv(rows, out / CELLS_CSV)
    page = _page(sweep_dir, rows, [f for f in figures if f is not None], law)
    write_text(out / "index.html", page)
    return out / "index.html"


def write_cells_csv(rows: list[CellRow], path: Path) -> None:
    """Every cell of the sweep database as CSV, for pandas, a spreadsheet or a git diff: the
    ``cells`` columns (``capgap.results.rows.COLUMNS``) without the machine's run paths, one
    row per cell in key order."""
    names = [c for c in STORE_COLUMNS if c not in _PATH_COLUMNS]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=names, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(sorted((r.columns() for r in rows), key=lambda r: r["key"]))
    write_text(path, buf.getvalue())


def _targets(rows: list[CellRow]) -> list[int]:
    return sorted({r.student_target for r in rows if r.status == "done"})


def _law_figure(law: dict[str, Any], out: Path) -> tuple[str, str]:
    path = plot_law(law, out / "law.png")
    return path.name, "The law: best teacher T* against student size S (fit when there is one)"


def curve_figure(rows: list[CellRow], target: int, out: Path) -> tuple[str, str] | None:
    """Val loss vs teacher params for one student size; None when it has no finished rows."""
    plt = pyplot()
    mine = [r for r in rows if r.student_target == target and r.status == "done"]
    if not mine:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for label, baseline, cells in _series(mine):
        _line(ax, [(by_t[0].teacher_params, _mean(r.val_loss for r in by_t)) for by_t in cells],
              label, baseline)
    _log_x(ax, "teacher parameters (total)", "held-out loss (nats/token)")
    ax.set_title(f"student {target / 1e6:.3g}M params")
    name = f"loss_student_{target}.png"
    save_figure(fig, ax, out / name)
    return name, f"Student {target / 1e6:.3g}M: distilled (solid) and no-teacher baseline (dashed)"


def flops_figure(rows: list[CellRow], out: Path) -> tuple[str, str] | None:
    """Held-out loss against each cell's total model FLOPs (means over seeds), one line per
    student size and setting through its teachers, baselines dashed; its points go to
    ``loss_vs_flops.json``. Cells recorded before FLOPs were are left out; None without any."""
    mine = [r for r in rows if r.finished and r.total_flops is not None]
    if not mine:
        return None
    series = [{"label": label, "student_target": cells[0][0].student_target,
               "tokens": cells[0][0].tokens, "baseline": baseline, "points": [
        {"teacher": by_t[0].teacher, "teacher_params": by_t[0].teacher_params, "cells": len(by_t),
         "total_flops": _mean(r.total_flops for r in by_t),
         "val_loss": _mean(r.val_loss for r in by_t)} for by_t in cells]}
        for label, baseline, cells in _series(mine)]
    write_json(out / FLOPS_JSON, {"x": "total_flops", "y": "val_loss", "series": series})
    colors = {t: f"C{i % 10}" for i, t in enumerate(sorted({s["student_target"] for s in series}))}
    markers = {b: "osD^v<>p"[i % 8] for i, b in enumerate(sorted({s["tokens"] for s in series}))}
    fig, ax = pyplot().subplots(figsize=(6, 4.2))
    for s in series:  # a student size and its baseline share a colour; budgets differ by marker
        xs, ys = zip(*[(p["total_flops"], p["val_loss"]) for p in s["points"]], strict=True)
        ax.plot(xs, ys, ("--" if s["baseline"] else "-") + markers[s["tokens"]],
                label=s["label"], color=colors[s["student_target"]],
                alpha=0.8 if s["baseline"] else 1, markersize=5)
    _log_x(ax, "model FLOPs per cell (teacher forward + student training + scoring)",
           "held-out loss (nats/token)", _no_minor_labels)
    save_figure(fig, ax, out / FLOPS_IMAGE)
    return FLOPS_IMAGE, ("Held-out loss against compute: each line one student size and setting "
                  "through its teachers, smallest first; baselines (no teacher) dashed. "
                  f"Points: {FLOPS_JSON}")


def gain_figure(rows: list[CellRow], out: Path) -> tuple[str, str] | None:
    """Distillation gain (baseline loss - distilled loss, mean over seeds) against the
    teacher/student ratio, one line per student size; None without paired cells."""
    plt = pyplot()
    paired = [p for p in paired_rows(rows) if p.gain is not None]
    if not paired:
        return None
    groups: dict[tuple, dict[float, list[float]]] = {}
    for p in paired:
        r = p.row
        key = (r.student_target, r.objective, r.allocation, r.init, r.tokens)
        groups.setdefault(key, {}).setdefault(r.teacher_params / r.student_target,
                                              []).append(p.gain)
    fig, ax = plt.subplots(figsize=(6, 4.2))
    for (target, obj, alloc, init, tokens), by_ratio in sorted(groups.items(), key=str):
        xs = sorted(by_ratio)
        ax.plot(xs, [sum(by_ratio[x]) / len(by_ratio[x]) for x in xs], "-o",
                label=f"S {target / 1e6:.3g}M, {obj}, {alloc}, {init}, {tokens:,} tok")
    ax.axhline(0, color="k", lw=0.8)
    _log_x(ax, "teacher / student size (requested)", "gain over no-teacher baseline (nats/token)",
           ratio_axis)
    name = "gain.png"
    save_figure(fig, ax, out / name)
    return name, ("Distillation gain: baseline loss minus distilled loss, mean over seeds "
                  "(above 0: the teacher helped)")


def _log_x(ax: Any, xlabel: str, ylabel: str, ticks: Callable[[Any], None] | None = None) -> None:
    """A log x axis (``ticks`` then sets its tick labels: a log scale resets them) and the
    two axis labels."""
    ax.set_xscale("log")
    if ticks is not None:
        ticks(ax.xaxis)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)


def _no_minor_labels(axis: Any) -> None:
    from matplotlib.ticker import NullFormatter  # as pyplot()

    axis.set_minor_formatter(NullFormatter())


def ratio_axis(axis: Any) -> None:
    """A log axis of size ratios labelled 1, 2, 5, 10, 20 ... instead of 2x10^0."""
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter  # as pyplot()

    axis.set_major_locator(FixedLocator([m * 10.0**e for e in range(-1, 4) for m in (1, 2, 5)]))
    axis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def save_figure(fig: Any, ax: Any, path: Path) -> None:
    """The report's figure finish: small legend (beside the axes when it has many entries, so
    it hides no data), light grid, PNG written atomically, closed."""
    if len(ax.get_legend_handles_labels()[1]) > 6:
        width, height = fig.get_size_inches()
        fig.set_size_inches(width + 3.2, height)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    else:
        ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    pyplot().close(fig)


def _series(rows: list[CellRow]) -> Iterable[tuple[str, bool, list[list[CellRow]]]]:
    """One line per student size and setting, smallest size first: (label, is baseline, its
    cells grouped by teacher, smallest first; a group holds the seeds). The label names the
    student size when ``rows`` hold several."""
    groups: dict[tuple, dict[int, list[CellRow]]] = {}
    for r in rows:
        key = (r.student_target, r.objective, r.allocation, r.init, r.tokens, not r.distilled)
        groups.setdefault(key, {}).setdefault(r.teacher_params, []).append(r)
    several = len({k[0] for k in groups}) > 1
    for (target, obj, alloc, init, tokens, baseline), by_t in sorted(
            groups.items(), key=lambda kv: (kv[0][0] or 0, str(kv[0][1:4]), kv[0][4] or 0,
                                            kv[0][5])):
        name = "baseline (alpha=1)" if baseline else obj
        size = f"S {target / 1e6:.3g}M, " if several else ""
        yield (f"{size}{name}, {alloc}, {init}, {tokens:,} tok", baseline,
               [by_t[t] for t in sorted(by_t)])


def _line(ax: Any, pts: list[tuple[float, float]], label: str, baseline: bool,
          color: str | None = None) -> None:
    """One series: solid circles, or dashed squares for a baseline."""
    xs, ys = zip(*pts, strict=True)
    ax.plot(xs, ys, "--s" if baseline else "-o", label=label, alpha=0.8 if baseline else 1,
            color=color)


def _mean(values: Iterable[float]) -> float:
    v = list(values)
    return sum(v) / len(v)


def _page(sweep_dir: Path, rows: list[CellRow], figures: list[tuple[str, str]],
          law: dict[str, Any] | None) -> str:
    counts = ", ".join(f"{n} {s}" for s, n in sorted(status_counts(rows).items()))
    paired = paired_table(paired_rows(rows))
    body = [f"<h1>capgap sweep: {html.escape(str(sweep_dir))}</h1>",
            f"<p>cells: {html.escape(counts or 'none')} (all of them: "
            f"<a href='{CELLS_CSV}'>{CELLS_CSV}</a>)</p>", _law_html(law)]
    for name, caption in figures:
        data = base64.b64encode((sweep_dir / REPORT_DIR / name).read_bytes()).decode()
        body.append(f'<figure><a href="{name}"><img src="data:image/png;base64,{data}" '
                    f'alt="{html.escape(name)}"></a><figcaption>{html.escape(caption)} '
                    f'(<a href="{name}">{name}</a>)</figcaption></figure>')
    body.append("<h2>Distilled cells and their baselines</h2>")
    body.append(f"<pre>{html.escape(table(paired, COLUMNS)) if paired else 'none yet'}</pre>")
    teachers = teacher_rows(sweep_dir)
    if teachers:
        body.append("<h2>Teachers (pretrained by the sweep)</h2>")
        body.append(f"<pre>{html.escape(table(teachers, TEACHER_COLUMNS))}</pre>")
    body.append("<h2>Compute spent</h2><p>Wall seconds per stage, summed over its runs "
                "(parallel workers overlap).</p>")
    body.append(f"<pre>{html.escape(table(compute_rows(sweep_dir, rows), COMPUTE_COLUMNS))}"
                "</pre>")
    body.append(f"<p>{html.escape(_flops_text(flops_spent(rows)))}</p>")
    failed = [r for r in rows if r.status == "failed"]
    if failed:
        body.append("<h2>Failed cells</h2><pre>" + html.escape("\n".join(
            f"{r.key}: {r.error}" for r in failed)) + "</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "img{max-width:100%}pre{font-size:12px;overflow-x:auto}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>capgap sweep</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def _flops_text(spent: dict[str, float] | None) -> str:
    if spent is None:
        return "Model FLOPs: not recorded for every finished cell (cells run before they were)."
    return (f"Model FLOPs of the finished cells: {spent['alone']:.3g} run one by one, each "
            f"scoring its teacher anew; {spent['shared']:.3g} with each teacher scored once and "
            "its forward shared by the cells of a (budget, seed) slice, as whole lockstep "
            "groups run it. Teacher pretraining and evaluation not counted.")


def _law_html(law: dict[str, Any] | None) -> str:
    if law is None:
        return "<p>No law.json yet (the sweep writes it when it finishes).</p>"
    where = html.escape(json.dumps(law.get("selection", {}).get("where", {})))
    bracket = (f"<p>Bracket (a bound from the teacher grid, not a fit): "
               f"{html.escape(bracket_text(law['bracket']))}</p>" if law.get("bracket") else "")
    if law.get("status") == "ok":
        fit = (f"T* = {law['slope']:.4g}·S + {law['intercept']:.4g}, R² {law.get('r2')}; "
               f"T* = {law['ratio']:.4g}·S")
        return f"<h2>Law</h2><p>{html.escape(fit)} on {where}</p>{bracket}"
    return (f"<h2>Law</h2><p>No law fitted ({html.escape(str(law.get('status')))}): "
            f"{html.escape(str(law.get('reason', '')))} — on {where}</p>{bracket}")
