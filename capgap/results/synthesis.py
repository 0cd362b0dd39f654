"""Across a study's parts: where the best teacher sits, how it moves with the budget, and what
the same-init control shows — computed from the parts' rows, never typed by hand.

Each part is a sweep; its ``findings.json`` answers H1-H3 inside that part. The questions that
need several parts at once are answered here (and rendered by :mod:`capgap.report.synthesis`):

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
* **Scratch** (:func:`scratch_rows`): randomly initialised students (the shape pruning from
  each teacher gives) beside the own-pruned ones: no pruning damage at all, and what
  pruning's init is worth.

A cell that two parts share (by its key) counts once per group; the control's cell on the
teacher it was cut from is also the paper's cell for that teacher, so it sits in both.
Best teacher, censoring, noise and baseline pairing are :mod:`capgap.results.optimum`'s and
:mod:`capgap.results.pairing`'s rules.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from capgap.results.defaults import NOISE_FLOOR, SIGNAL
from capgap.results.findings import seed_sd
from capgap.results.optimum import (
    best_index,
    censored_edge,
    exceeds_noise,
    seed_noise,
    shared_seeds,
)
from capgap.results.pairing import baselines, gain
from capgap.results.rows import PartRow, as_rows

GROUP_KEYS = ("family", "objective", "init", "allocation", "source", "tokens", "student_target")


def tag_rows(rows: Iterable[Mapping[str, Any]], part: str, family: str,
             prune_from: str | None = None) -> list[PartRow]:
    """Finished rows of one part, with its name, its teacher family and where its students
    were cut from: ``own`` (each from its teacher) or ``from T`` (a same-init control, the
    part's ``students.prune_from``; its cell on T itself belongs to the control too)."""
    out = []
    for r in as_rows(rows):
        if not r.finished:
            continue
        cut = r.cut_from
        if r.distilled:
            source = f"from {prune_from}" if prune_from else "own"
        else:  # a baseline belongs to the students it was cut like: own only if from its teacher
            source = "own" if cut == r.teacher else f"from {cut}"
        out.append(PartRow(**r.columns() | {"pruned_from": cut}, part=part, family=family,
                           source=source))
    return out


def _unique(rows: list[PartRow]) -> list[PartRow]:
    seen: dict[Any, PartRow] = {}
    for r in rows:
        seen.setdefault((r.key or id(r), r.source), r)
    return list(seen.values())


def _group(r: PartRow) -> tuple:
    return tuple(r[k] for k in GROUP_KEYS)


def optimum_table(rows: list[PartRow], noise_floor: float = NOISE_FLOOR) -> list[dict[str, Any]]:
    """One entry per group of distilled cells that differ only in the teacher (and seed)."""
    rows = _unique(rows)
    base = baselines(rows)
    groups: dict[tuple, list[PartRow]] = {}
    for r in rows:
        if r.distilled:
            groups.setdefault(_group(r), []).append(r)
    out = []
    for key, every in sorted(groups.items(), key=lambda kv: str(kv[0])):
        cells = shared_seeds(every, lambda r: r.teacher_params, lambda r: r.seed)
        by_t: dict[int, list[PartRow]] = {}
        for r in cells:
            by_t.setdefault(r.teacher_params, []).append(r)
        teachers = sorted(by_t)
        means = [statistics.fmean(r.val_loss for r in by_t[t]) for t in teachers]
        sds = [seed_sd([r.val_loss for r in by_t[t]]) for t in teachers]
        gains = []
        for t in teachers:
            g = [x for r in by_t[t] if (x := gain(r, base)) is not None]
            gains.append(statistics.fmean(g) if g else None)
        j = best_index(means)
        with_gain = [i for i, g in enumerate(gains) if g is not None]
        jg = max(with_gain, key=lambda i: (gains[i], -i)) if with_gain else None
        noise = seed_noise(sds, noise_floor)
        entry = dict(zip(GROUP_KEYS, key, strict=True))
        entry.update({
            "teachers": [by_t[t][0].teacher for t in teachers], "teacher_params": teachers,
            "student_params": round(statistics.fmean(r.student_params for r in cells)),
            "seeds": sorted({r.seed for r in cells}), "loss": means, "seed_sd": sds,
            "gain": gains, "best": by_t[teachers[j]][0].teacher,
            "best_params": teachers[j], "ratio": teachers[j] / key[-1],
            "censored": censored_edge(j, len(teachers)),
            "margin_vs_smallest": means[0] - means[j],
            "best_gain": None if jg is None else by_t[teachers[jg]][0].teacher,
            "best_gain_edge": None if jg is None else censored_edge(jg, len(teachers)),
            "spread": max(means) - min(means),
            "noise": noise.value, "noise_measured": noise.measured,
            "noise_seed_sd": noise.seed_sd,
            "parts": sorted({r.part for r in cells})})
        out.append(entry)
    return out


def pooled_rows(rows: list[PartRow], baselines: bool = False, **match: Any) -> list[PartRow]:
    """Distilled own-pruned cells of every part matching ``match`` (family, objective,
    allocation, tokens ...), each cell once: the input of a law pooled over parts. With
    ``baselines``, also the no-teacher baselines they pair with (any objective: a part that
    adds objectives borrows the baselines another part ran)."""
    return [r for r in _unique(rows) if r.source == "own" and r.init == "pruned"
            and (r.distilled or baselines)
            and all(r[k] == v for k, v in match.items() if r.distilled or k != "objective")]


def budget_rows(table: list[dict[str, Any]], family: str, objective: str,
                allocation: str = "global") -> list[dict[str, Any]]:
    """The paper's setting (own-pruned, ``objective``, ``allocation``) of ``family``: one row
    per (size, budget), sorted by size then budget — where the optimum sits at each budget."""
    mine = [g for g in table if g["family"] == family and g["objective"] == objective
            and g["allocation"] == allocation and g["init"] == "pruned" and g["source"] == "own"]
    return sorted(mine, key=lambda g: (g["student_target"], g["tokens"], g["allocation"]))


def control_rows(table: list[dict[str, Any]], rows: list[PartRow]) -> list[dict[str, Any]]:
    """Each same-init control group beside the own-pruned cells of the same size, budget,
    objective and seeds; noise is the own-pruned seed spread when the control has one seed."""
    return [_beside_paper(g, rows, f"same init (cut from {g['source'][5:]})")
            | {"cut_from": g["source"][5:]}
            for g in table if g["source"].startswith("from ")]


def scratch_rows(table: list[dict[str, Any]], rows: list[PartRow]) -> list[dict[str, Any]]:
    """Each group of randomly initialised students (the shape pruning from each teacher
    gives) beside the own-pruned students of the same size, budget, objective and seeds:
    no pruning damage, so the loss spread is the teacher's (and the shape's) effect."""
    return [_beside_paper(g, rows, "scratch init (same shape, random weights)")
            for g in table if g["init"] == "scratch" and g["source"] == "own"]


def allocation_rows(table: list[dict[str, Any]], rows: list[PartRow],
                    allocation: str = "global") -> list[dict[str, Any]]:
    """Each group of own-pruned students whose layers were cut with another allocation than
    the study's (``uniform``: the same count in every layer) beside the ``allocation`` ones
    of the same size, budget, objective and seeds: does how pruning spreads the cut move the
    best teacher? Gains are over the no-teacher baseline pruned the same way."""
    return [_beside_paper(g, rows, f"{g['allocation']} allocation (pruned from each teacher)",
                          allocation)
            for g in table if g["init"] == "pruned" and g["source"] == "own"
            and g["allocation"] != allocation]


def _beside_paper(g: dict[str, Any], rows: list[PartRow], label: str,
                  allocation: str | None = None) -> dict[str, Any]:
    """One optimum group ``g`` set teacher by teacher beside the paper's students (pruned
    from their own teacher) of the same family, objective, budget and size, and of
    ``allocation`` (default: ``g``'s own)."""
    rows = _unique(rows)
    base = baselines(rows)
    same = [k for k in GROUP_KEYS if k not in ("source", "init", "allocation")]
    paper_allocation = g["allocation"] if allocation is None else allocation
    match = [r for r in rows if r.distilled and r.source == "own" and r.init == "pruned"
             and r.allocation == paper_allocation and all(r[k] == g[k] for k in same)]
    seeds = set(g["seeds"])
    own_all = [r for r in match if r.seed in seeds]
    per_teacher = []
    for name, t, loss in zip(g["teachers"], g["teacher_params"], g["loss"], strict=True):
        own = [r for r in own_all if r.teacher_params == t]
        own_gain = [x for r in own if (x := gain(r, base)) is not None]
        per_teacher.append({
            "teacher": name, "teacher_params": t, "control_loss": loss,
            "control_gain": g["gain"][g["teachers"].index(name)],
            "own_loss": statistics.fmean(r.val_loss for r in own) if own else None,
            "own_gain": statistics.fmean(own_gain) if own_gain else None})
    own_sds = [seed_sd(v) for v in _by_teacher(match).values()]
    noise = g["noise"] if g["noise_measured"] else seed_noise(own_sds, g["noise"]).value
    own_means = {t["teacher"]: t["own_loss"] for t in per_teacher if t["own_loss"] is not None}
    own_best = min(own_means, key=lambda n: own_means[n]) if own_means else None
    return {k: g[k] for k in (*GROUP_KEYS, "seeds")} | {
        "label": label, "teachers": per_teacher, "best": g["best"],
        "censored": g["censored"], "ratio": g["ratio"], "spread": g["spread"],
        "noise": noise, "teacher_effect": exceeds_noise(g["spread"], noise),
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


def _by_teacher(rows: list[PartRow]) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for r in rows:
        out.setdefault(r.teacher, []).append(r.val_loss)
    return out


def synthesis(rows: list[PartRow], primary_family: str, primary_objective: str,
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
