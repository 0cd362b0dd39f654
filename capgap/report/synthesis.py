"""Across a study's parts: where the best teacher sits, how it moves with the budget, and what
the same-init control shows — computed from the parts' rows, never typed by hand.

Each part is a sweep; its ``findings.json`` answers H1-H3 inside that part. The questions that
need several parts at once are answered here:

* **Optima** (:func:`optimum_table`): for every group of distilled cells that differ only in
  the teacher — (family, objective, init, allocation, pruning source, budget, student size) —
  the best teacher by seed-mean loss, whether it sits at an edge of the teachers tried
  (censored), how far it beats the smallest teacher, and the seed noise to read that against;
  also the teacher with the largest gain over its own no-teacher baseline (with students
  pruned from their own teachers, the loss mixes pruning damage with the teacher's effect,
  the gain does not).
* **Budget** (:func:`budget_rows`): the optima of the paper's setting (own-pruned students,
  the study's first objective) as a size × budget grid: how the optimum moves with budget.
* **Control** (:func:`control_rows`): students all pruned from one teacher and distilled from
  every teacher, beside the paper's own-pruned students at the same size, budget and seeds.
  With one initialisation for all teachers, the loss spread is the teacher's own effect.
* **Scratch** (:func:`scratch_rows`): randomly initialised students (the shape pruning gives)
  beside the own-pruned ones: no pruning damage at all, and what pruning's init is worth.

A cell that two parts share (by its key) counts once per group; the control's cell on the
teacher it was cut from is also the paper's cell for that teacher, so it sits in both.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from capgap.law.bracket import PAPER_RATIO, SIGNAL
from capgap.law.optimum import shared_seeds
from capgap.results.defaults import NOISE_FLOOR

GROUP_KEYS = ("family", "objective", "init", "allocation", "source", "tokens", "student_target")
BASE_KEYS = ("family", "init", "allocation", "tokens", "student_target", "seed", "pruned_from")


def tag_rows(rows: Iterable[dict[str, Any]], part: str, family: str,
             prune_from: str | None = None) -> list[dict[str, Any]]:
    """Finished rows of one part, with its name, its teacher family and where its students
    were cut from: ``own`` (each from its teacher) or ``from T`` (a same-init control, the
    part's ``students.prune_from``; its cell on T itself belongs to the control too)."""
    out = []
    for r in rows:
        if r.get("status") != "done" or r.get("val_loss") is None:
            continue
        cut = r.get("pruned_from") or r["teacher"]
        if r["alpha"] < 1:
            source = f"from {prune_from}" if prune_from else "own"
        else:  # a baseline belongs to the students it was cut like: own only if from its teacher
            source = "own" if cut == r["teacher"] else f"from {cut}"
        out.append({**r, "part": part, "family": family, "pruned_from": cut, "source": source})
    return out


def _unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[Any, dict[str, Any]] = {}
    for r in rows:
        seen.setdefault((r.get("key") or id(r), r["source"]), r)
    return list(seen.values())


def _baselines(rows: list[dict[str, Any]]) -> dict[tuple, float]:
    return {tuple(r[k] for k in BASE_KEYS): r["val_loss"] for r in rows if r["alpha"] >= 1}


def optimum_table(rows: list[dict[str, Any]],
                  noise_floor: float = NOISE_FLOOR) -> list[dict[str, Any]]:
    """One entry per group of distilled cells that differ only in the teacher (and seed)."""
    rows = _unique(rows)
    base = _baselines(rows)
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in rows:
        if r["alpha"] < 1:
            groups.setdefault(tuple(r[k] for k in GROUP_KEYS), []).append(r)
    out = []
    for key, every in sorted(groups.items(), key=lambda kv: str(kv[0])):
        cells = shared_seeds(every, lambda r: r["teacher_params"], lambda r: r["seed"])
        by_t: dict[int, list[dict[str, Any]]] = {}
        for r in cells:
            by_t.setdefault(r["teacher_params"], []).append(r)
        teachers = sorted(by_t)
        means = [statistics.fmean(r["val_loss"] for r in by_t[t]) for t in teachers]
        sds = [statistics.stdev([r["val_loss"] for r in by_t[t]]) if len(by_t[t]) > 1 else None
               for t in teachers]
        gains = []
        for t in teachers:
            g = [base[b] - r["val_loss"] for r in by_t[t]
                 if (b := tuple(r[k] for k in BASE_KEYS)) in base]
            gains.append(statistics.fmean(g) if g else None)
        j = min(range(len(teachers)), key=lambda i: (means[i], i))
        last = len(teachers) - 1
        edge = _edge(j, last)
        known = [s for s in sds if s is not None]
        with_gain = [i for i, g in enumerate(gains) if g is not None]
        jg = max(with_gain, key=lambda i: (gains[i], -i)) if with_gain else None
        entry = dict(zip(GROUP_KEYS, key, strict=True))
        entry.update({
            "teachers": [by_t[t][0]["teacher"] for t in teachers], "teacher_params": teachers,
            "student_params": round(statistics.fmean(r["student_params"] for r in cells)),
            "seeds": sorted({r["seed"] for r in cells}), "loss": means, "seed_sd": sds,
            "gain": gains, "best": by_t[teachers[j]][0]["teacher"],
            "best_params": teachers[j], "ratio": teachers[j] / key[-1], "censored": edge,
            "margin_vs_smallest": means[0] - means[j],
            "best_gain": None if jg is None else by_t[teachers[jg]][0]["teacher"],
            "best_gain_edge": None if jg is None else _edge(jg, last),
            "spread": max(means) - min(means),
            "noise": max([*known, noise_floor]), "noise_measured": bool(known),
            "noise_seed_sd": max(known) if known else None,
            "parts": sorted({r["part"] for r in cells})})
        out.append(entry)
    return out


def _edge(j: int, last: int) -> str | None:
    return "both" if last == 0 else "low" if j == 0 else "high" if j == last else None


def pooled_rows(rows: list[dict[str, Any]], baselines: bool = False,
                **match: Any) -> list[dict[str, Any]]:
    """Distilled own-pruned cells of every part matching ``match`` (family, objective,
    allocation, tokens ...), each cell once: the input of a law pooled over parts. With
    ``baselines``, also the no-teacher baselines they pair with (any objective: a part that
    adds objectives borrows the baselines another part ran)."""
    return [r for r in _unique(rows) if r["source"] == "own" and r["init"] == "pruned"
            and (r["alpha"] < 1 or baselines)
            and all(r[k] == v for k, v in match.items() if r["alpha"] < 1 or k != "objective")]


def budget_rows(table: list[dict[str, Any]], family: str, objective: str,
                allocation: str = "global") -> list[dict[str, Any]]:
    """The paper's setting (own-pruned, ``objective``, ``allocation``) of ``family``: one row
    per (size, budget), sorted by size then budget — where the optimum sits at each budget."""
    mine = [g for g in table if g["family"] == family and g["objective"] == objective
            and g["allocation"] == allocation and g["init"] == "pruned" and g["source"] == "own"]
    return sorted(mine, key=lambda g: (g["student_target"], g["tokens"], g["allocation"]))


def control_rows(table: list[dict[str, Any]],
                 rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each same-init control group beside the own-pruned cells of the same size, budget,
    objective and seeds; noise is the own-pruned seed spread when the control has one seed."""
    return [_beside_paper(g, rows, f"same init (cut from {g['source'][5:]})")
            | {"cut_from": g["source"][5:]}
            for g in table if g["source"].startswith("from ")]


def scratch_rows(table: list[dict[str, Any]],
                 rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each group of randomly initialised students (the shape pruning from each teacher
    gives) beside the own-pruned students of the same size, budget, objective and seeds:
    no pruning damage, so the loss spread is the teacher's (and the shape's) effect."""
    return [_beside_paper(g, rows, "scratch init (same shape, random weights)")
            for g in table if g["init"] == "scratch" and g["source"] == "own"]


def allocation_rows(table: list[dict[str, Any]], rows: list[dict[str, Any]],
                    allocation: str = "global") -> list[dict[str, Any]]:
    """Each group of own-pruned students whose layers were cut with another allocation than
    the study's (``uniform``: the same count in every layer) beside the ``allocation`` ones
    of the same size, budget, objective and seeds: does how pruning spreads the cut move the
    best teacher? Gains are over the no-teacher baseline pruned the same way."""
    return [_beside_paper(g, rows, f"{g['allocation']} allocation (pruned from each teacher)",
                          allocation)
            for g in table if g["init"] == "pruned" and g["source"] == "own"
            and g["allocation"] != allocation]


def _beside_paper(g: dict[str, Any], rows: list[dict[str, Any]], label: str,
                  allocation: str | None = None) -> dict[str, Any]:
    """One optimum group ``g`` set teacher by teacher beside the paper's students (pruned
    from their own teacher) of the same family, objective, budget and size, and of
    ``allocation`` (default: ``g``'s own)."""
    rows = _unique(rows)
    base = _baselines(rows)
    same = [k for k in GROUP_KEYS if k not in ("source", "init", "allocation")]
    paper_allocation = g["allocation"] if allocation is None else allocation
    match = [r for r in rows if r["alpha"] < 1 and r["source"] == "own" and r["init"] == "pruned"
             and r["allocation"] == paper_allocation and all(r[k] == g[k] for k in same)]
    seeds = set(g["seeds"])
    own_all = [r for r in match if r["seed"] in seeds]
    per_teacher = []
    for name, t, loss in zip(g["teachers"], g["teacher_params"], g["loss"], strict=True):
        own = [r for r in own_all if r["teacher_params"] == t]
        own_gain = [base[b] - r["val_loss"] for r in own
                    if (b := tuple(r[k] for k in BASE_KEYS)) in base]
        per_teacher.append({
            "teacher": name, "teacher_params": t, "control_loss": loss,
            "control_gain": g["gain"][g["teachers"].index(name)],
            "own_loss": statistics.fmean(r["val_loss"] for r in own) if own else None,
            "own_gain": statistics.fmean(own_gain) if own_gain else None})
    own_sds = [statistics.stdev(v) for v in _by_teacher(match).values() if len(v) > 1]
    noise = g["noise"] if g["noise_measured"] else max([*own_sds, g["noise"]])
    own_means = {t["teacher"]: t["own_loss"] for t in per_teacher if t["own_loss"] is not None}
    own_best = min(own_means, key=lambda n: own_means[n]) if own_means else None
    return {k: g[k] for k in (*GROUP_KEYS, "seeds")} | {
        "label": label, "teachers": per_teacher, "best": g["best"],
        "censored": g["censored"], "ratio": g["ratio"], "spread": g["spread"],
        "noise": noise, "teacher_effect": g["spread"] > SIGNAL * noise,
        "own_best": own_best, "same_best": own_best == g["best"]}


def objective_rows(table: list[dict[str, Any]], family: str,
                   allocation: str = "global") -> list[dict[str, Any]]:
    """The paper's setting of ``family`` (own-pruned, ``allocation``) at every budget run with
    two or more objectives: the groups to set side by side (does the objective move the best
    teacher?)."""
    paper = [g for g in table if g["family"] == family and g["init"] == "pruned"
             and g["source"] == "own" and g["allocation"] == allocation]
    budgets = {t for t in {g["tokens"] for g in paper}
               if len({g["objective"] for g in paper if g["tokens"] == t}) > 1}
    return sorted((g for g in paper if g["tokens"] in budgets),
                  key=lambda g: (g["tokens"], g["student_target"], g["objective"]))


def _by_teacher(rows: list[dict[str, Any]]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r["teacher"], []).append(r["val_loss"])
    return out


def synthesis(rows: list[dict[str, Any]], primary_family: str, primary_objective: str,
              primary_allocation: str = "global") -> dict[str, Any]:
    """Everything above, as one JSON-ready dict (``study.json["synthesis"]``)."""
    table = optimum_table(rows)
    return {"primary": {"family": primary_family, "objective": primary_objective,
                        "allocation": primary_allocation},
            "optima": table,
            "budget": budget_rows(table, primary_family, primary_objective, primary_allocation),
            "control": control_rows(table, rows), "scratch": scratch_rows(table, rows),
            "allocation": allocation_rows(table, rows, primary_allocation),
            "objectives": objective_rows(table, primary_family, primary_allocation),
            "rule": f"An effect counts when it exceeds {SIGNAL:g} x the seed noise "
                    f"(floor {NOISE_FLOOR:g} nats); an optimum at the smallest or largest "
                    "teacher tried is censored"}


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from capgap.law.units import format_size
    from capgap.report.html import ratio_axis, save_figure

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from capgap.law.units import format_size
    from capgap.report.html import ratio_axis

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
            j = min(range(len(ys)), key=lambda i: (ys[i], i))
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
            best = min(range(len(ys)), key=ys.__getitem__)
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
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
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    axis.set_major_locator(FixedLocator(sorted(values)))
    axis.set_major_formatter(FuncFormatter(lambda x, _: fmt(x)))
    axis.set_minor_formatter(NullFormatter())


def _save_panels(fig: Any, axes: Any, path: str | Path) -> None:
    """Legend and grid on every panel, then the report's figure finish on the last."""
    from capgap.report.html import save_figure

    for ax in axes[:-1]:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    save_figure(fig, axes[-1], Path(path))
