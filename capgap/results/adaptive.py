"""Adaptive selection: which cells of a sweep to run next so that every student size's best
teacher is found with fewer cells than the full grid, which teachers can be left out and
why, and a replay of the rule on a finished grid's own rows.

A *curve* is one student size in one setting (objective, allocation, init, budget): the
distilled cells that differ only in the teacher and seed. Its axis is the grid's teachers
for that size, ascending. The rule works in rounds (a round's cells finish before the next
round is chosen) and depends only on the cells finished so far, so a resumed sweep
recomputes its choices from its store:

1. **Start.** A coarse subset of ``start`` teachers spread evenly along the axis (for 3: both
   ends and the middle). A chosen teacher runs with every seed of the sweep and with the
   no-teacher baselines of its students, so teachers are compared on the same seeds (the
   results layer's shared-seed rule would ignore unbalanced extra seeds). A teacher whose
   cells are partly finished (an interrupted round) is completed before anything new.
2. **Read the curve** exactly as the results layer does (:func:`optimum_table`): the best
   teacher by seed-mean loss, and the seed noise (largest seed sd, never below the floor).
   A measured teacher is **dominated** when its loss exceeds the best's by more than
   ``signal`` x noise (:func:`~capgap.results.optimum.exceeds_noise`, the rule by which the
   findings count an effect): equivalently its lower bound, mean - k x noise, lies above the
   best's upper bound, mean + k x noise, with k = ``signal`` / 2. The others are tied with
   the best.
3. **Bracket.** If the loss falls then rises with teacher size (the curve the law looks
   for), the best teacher lies strictly between the nearest dominated teacher measured below
   the lowest tied teacher and the nearest one above the highest (the bracket of
   :mod:`capgap.law.bracket`, on the grid's axis; an end of the axis where there is none).
   Unmeasured teachers outside the bracket are dropped, with that reason.
4. **Next.** The unmeasured teachers inside the bracket nearest (in steps along the axis) to
   a tied teacher: the current best's neighbours. If a neighbour comes out dominated, that
   side of the bracket is final, the largest narrowing one measurement can give. A curve is
   finished when nothing inside its bracket is left to run; its best teacher is then the
   results layer's best over the teachers run.

The same rows in any order give the same choices. Flat or noisy curves (many teachers tied)
keep wide brackets and run most of the grid: the rule saves cells only where the data
separate the teachers beyond noise, and it assumes one valley per curve.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from capgap.errors import CapgapError
from capgap.results.defaults import NOISE_FLOOR, SIGNAL
from capgap.results.optimum import exceeds_noise
from capgap.results.pairing import student_key
from capgap.results.rows import CellRow, as_rows
from capgap.results.synthesis import optimum_table, tag_rows

CURVE_KEYS = ("objective", "allocation", "init", "tokens", "student_target")
"""What a curve shares: its cells differ only in the teacher and seed."""
FAILED = "its cells failed in this run (re-run the sweep to retry them)"


@dataclass
class AdaptiveConfig:
    """``adaptive`` in a sweep config: run the cells the selection chooses instead of the
    whole grid (the rule: :mod:`capgap.results.adaptive`)."""

    enabled: bool = False
    """Off: the full grid (the default)."""
    start: int = 3
    """Teachers per student size in the first round, spread evenly (3: both ends, middle)."""
    signal: float = SIGNAL
    """A teacher is dropped when its loss exceeds the best's by more than this x noise."""
    noise_floor: float = NOISE_FLOOR
    """Smallest seed noise assumed, in nats (also the noise with a single seed)."""

    def validate(self) -> None:
        if self.start < 2:
            raise CapgapError(f"adaptive.start must be at least 2 (both ends), got {self.start}")
        if self.signal < 0 or self.noise_floor < 0:
            raise CapgapError("adaptive.signal and adaptive.noise_floor must be >= 0, got "
                              f"{self.signal} and {self.noise_floor}")


@dataclass(frozen=True)
class Dropped:
    """A teacher left out of a curve's search, and why."""

    teacher: str
    teacher_params: int
    measured: bool
    reason: str


@dataclass
class Curve:
    """Where one curve's search stands."""

    setting: dict[str, Any]
    teachers: list[str]  # the grid's axis, ascending
    phase: str  # start | complete | narrow | done
    measured: list[str] = field(default_factory=list)
    best: str | None = None
    noise: float | None = None
    tied: list[str] = field(default_factory=list)
    bracket: list[str | None] | None = None  # [lo, hi] teachers, None beyond an end
    dropped: list[Dropped] = field(default_factory=list)
    next: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["dropped"] = [dict(x.__dict__) for x in self.dropped]
        return d


@dataclass
class Selection:
    """The cells to run next (grid keys, sorted) and every curve's state."""

    next: list[str]
    curves: list[Curve]

    def to_dict(self) -> dict[str, Any]:
        return {"done": not self.next, "next": self.next,
                "curves": [c.to_dict() for c in self.curves]}


def curve_of(row: Mapping[str, Any]) -> tuple:
    """The curve of a row (or of an :func:`optimum_table` entry): its :data:`CURVE_KEYS`."""
    return tuple(row[k] for k in CURVE_KEYS)


def spread(n_teachers: int, start: int) -> set[int]:
    """``start`` indices spread evenly over ``n_teachers`` (both ends always in)."""
    n = min(start, n_teachers)
    if n < 2:
        return set(range(n_teachers))
    return {(i * (n_teachers - 1) + (n - 1) // 2) // (n - 1) for i in range(n)}


def select(grid: Iterable[Mapping[str, Any]], rows: Iterable[Mapping[str, Any]],
           cfg: AdaptiveConfig | None = None, exclude: Collection[str] = ()) -> Selection:
    """The next cells of ``grid`` (every cell of the sweep, described: key, teacher, sizes,
    setting, seed, alpha) given the store's ``rows`` (finished ones count; rows of cells not
    in the grid are ignored). ``exclude``: keys not to choose again (failed in this run)."""
    cfg = cfg or AdaptiveConfig()
    grid = as_rows(grid)
    keys = {r.key for r in grid}
    finished = {r.key: r for r in as_rows(rows) if r.finished and r.key in keys}
    table = {curve_of(e): e for e in optimum_table(tag_rows(finished.values(), "", ""),
                                                    cfg.noise_floor)}
    baselines: dict[tuple, list[str]] = {}
    curves: dict[tuple, dict[tuple[int, str], list[CellRow]]] = {}
    for r in grid:
        if r.distilled:
            curves.setdefault(curve_of(r), {}).setdefault((r.teacher_params, r.teacher),
                                                          []).append(r)
        else:
            baselines.setdefault(student_key(r), []).append(r.key)

    def todo(cells: list[CellRow]) -> set[str]:
        """The keys a teacher's cells still need: the distilled cells and their baselines."""
        wanted = {c.key for c in cells} | {k for c in cells
                                          for k in baselines.get(student_key(c), [])}
        return {k for k in wanted if k not in finished and k not in exclude}

    out, chosen = [], set()
    for key in sorted(curves, key=str):
        axis = sorted(curves[key])
        needs = [todo(curves[key][t]) for t in axis]
        curve = _curve(key, axis, needs, table.get(key), cfg)
        out.append(curve)
        names = [name for _, name in axis]
        for name in curve.next:
            chosen |= needs[names.index(name)]
    return Selection(sorted(chosen), out)


def _curve(key: tuple, axis: list[tuple[int, str]], needs: list[set[str]],
           entry: dict[str, Any] | None, cfg: AdaptiveConfig) -> Curve:
    """One curve's state and choices (the rule of the module docstring)."""
    names = [name for _, name in axis]
    params = [p for p, _ in axis]
    measured = {params.index(p) for p in (entry or {}).get("teacher_params", [])}
    curve = Curve(dict(zip(CURVE_KEYS, key, strict=True)), names, "start",
                  [names[j] for j in sorted(measured)])
    first = spread(len(axis), cfg.start)
    pending = [j for j in sorted(first | measured) if needs[j]]
    if entry is not None:
        _read(curve, entry, cfg)
    if pending:
        curve.phase = "start" if any(j not in measured for j in pending) else "complete"
        curve.next = [names[j] for j in pending]
        return curve
    if not measured:  # every start teacher failed in this run
        curve.phase = "done"
        curve.dropped = [Dropped(n, p, False, FAILED) for p, n in axis]
        return curve
    tied = sorted(names.index(t) for t in curve.tied)
    lo = max((j for j in measured if j < tied[0]), default=-1)
    hi = min((j for j in measured if j > tied[-1]), default=len(axis))
    curve.bracket = [names[lo] if lo >= 0 else None, names[hi] if hi < len(axis) else None]
    inside = []
    for j in range(len(axis)):
        if j in measured:
            continue
        if not lo < j < hi:
            edge = names[lo] if j < lo else names[hi]
            curve.dropped.append(Dropped(names[j], params[j], False,
                                         f"outside the bracket: beyond {edge}, which is "
                                         f"dominated, on the far side from the best "
                                         f"{curve.best} (one valley per curve)"))
        elif not needs[j]:
            curve.dropped.append(Dropped(names[j], params[j], False, FAILED))
        else:
            inside.append(j)
    curve.dropped.sort(key=lambda d: d.teacher_params)
    if inside:
        near = {j: min(abs(j - t) for t in tied) for j in inside}
        curve.next = [names[j] for j in inside if near[j] == min(near.values())]
    curve.phase = "narrow" if inside else "done"
    return curve


def _read(curve: Curve, entry: dict[str, Any], cfg: AdaptiveConfig) -> None:
    """The best teacher, noise and ties of a curve's measured teachers (results layer's
    :func:`optimum_table` entry); the dominated ones are dropped with their margin."""
    loss = entry["loss"]
    best = loss[entry["teacher_params"].index(entry["best_params"])]
    noise = entry["noise"]  # already at least cfg.noise_floor
    curve.best, curve.noise = entry["best"], noise
    for name, p, m in zip(entry["teachers"], entry["teacher_params"], loss, strict=True):
        if exceeds_noise(m - best, noise, cfg.signal):
            curve.dropped.append(Dropped(name, p, True,
                                         f"dominated: loss {m:.4f} is {m - best:.4f} above "
                                         f"the best {entry['best']} ({best:.4f}), more than "
                                         f"{cfg.signal:g} x noise {noise:.4f}"))
        else:
            curve.tied.append(name)


COSTS = ("tokens", "distill_s", "total_flops")
"""Columns summed as a replay's cost: tokens, cell seconds, and FLOPs where rows record them."""


def replay(rows: Iterable[Mapping[str, Any]], cfg: AdaptiveConfig | None = None
           ) -> dict[str, Any]:
    """Run the rule on a finished grid's own ``rows`` (each round reads the stored results
    of the cells it chooses) and compare its best teachers with the full grid's: cells,
    rounds and cost used, and per curve whether the best teacher is the same (or tied with
    it within the full grid's ``signal`` x noise)."""
    cfg = cfg or AdaptiveConfig()
    done = {r.key: r for r in as_rows(rows) if r.finished}
    if not any(r.distilled for r in done.values()):
        raise CapgapError("adaptive replay: no finished distilled cells to replay")
    grid = list(done.values())
    seen: dict[str, CellRow] = {}
    rounds = 0
    while (sel := select(grid, seen.values(), cfg)).next:
        rounds += 1
        seen |= {k: done[k] for k in sel.next}
    full = {curve_of(e): e for e in optimum_table(tag_rows(grid, "", ""), cfg.noise_floor)}
    curves = [_compare(c, full[curve_of(c.setting)], grid, seen, cfg) for c in sel.curves]
    return {"rule": dict(cfg.__dict__), "rounds": rounds,
            "cells": _share(len(seen), len(grid)),
            "cost": {c: _share(_total(seen.values(), c), _total(grid, c)) for c in COSTS
                     if _total(grid, c)},
            "same_best": [sum(c["same"] for c in curves), len(curves)],
            "tied_best": [sum(c["tied"] for c in curves), len(curves)],
            "curves": curves}


def teacher_families(rows: Mapping[str, list[dict[str, Any]]]) -> list[list[str]]:
    """The sources grouped by teacher family: two sources pool when they share a teacher (the
    same name and size), so parts of one family with different student sizes stay together
    and another family's teachers (other names or sizes) never join their axis."""
    teachers = {d: {(r["teacher"], r["teacher_params"]) for r in rs if r.get("teacher")}
                for d, rs in rows.items()}
    groups: list[tuple[list[str], set]] = []
    for d in rows:
        mine = ([d], set(teachers[d]))
        for g in [g for g in groups if g[1] & mine[1]]:
            groups.remove(g)
            mine = (g[0] + mine[0], g[1] | mine[1])
        groups.append(mine)
    return [sorted(g, key=list(rows).index) for g, _ in sorted(
        groups, key=lambda g: min(list(rows).index(d) for d in g[0]))]


def replay_families(families: Mapping[str, Iterable[Mapping[str, Any]]],
                    cfg: AdaptiveConfig | None = None) -> dict[str, Any]:
    """:func:`replay` of each teacher family's rows on its own (one family's teachers are
    never an axis for another's students), merged: cells and costs summed, rounds the most
    any family took, each curve tagged with its ``family``, and each family's own figures
    under ``families``."""
    if len(families) == 1:
        return replay(next(iter(families.values())), cfg)
    parts = {name: replay(rows, cfg) for name, rows in families.items()}
    runs = list(parts.values())

    def summed(pick: Any) -> dict[str, float]:
        return _share(sum(pick(r)["used"] for r in runs), sum(pick(r)["total"] for r in runs))

    costs = sorted({c for r in runs for c in r["cost"]}, key=COSTS.index)
    empty = {"used": 0, "total": 0}
    return {"rule": runs[0]["rule"], "rounds": max(r["rounds"] for r in runs),
            "cells": summed(lambda r: r["cells"]),
            "cost": {c: summed(lambda r, c=c: r["cost"].get(c, empty)) for c in costs},
            "same_best": [sum(r["same_best"][i] for r in runs) for i in (0, 1)],
            "tied_best": [sum(r["tied_best"][i] for r in runs) for i in (0, 1)],
            "curves": [{"family": name, **c} for name, r in parts.items() for c in r["curves"]],
            "families": {name: {k: r[k] for k in ("rounds", "cells", "same_best", "tied_best")}
                         for name, r in parts.items()}}


def _compare(curve: Curve, full: dict[str, Any], grid: list[CellRow],
             seen: Mapping[str, CellRow], cfg: AdaptiveConfig) -> dict[str, Any]:
    """One curve of a replay: the full grid's best beside the adaptive one."""
    loss = dict(zip(full["teachers"], full["loss"], strict=True))
    noise = full["noise"]
    gap = loss[curve.best] - loss[full["best"]]
    mine = [r for r in grid if r.distilled and curve_of(r) == curve_of(curve.setting)]
    return {**curve.setting, "full_best": full["best"], "adaptive_best": curve.best,
            "same": curve.best == full["best"],
            "tied": not exceeds_noise(gap, noise, cfg.signal), "gap": gap, "noise": noise,
            "censored": full["censored"], "teachers": curve.teachers,
            "run": curve.measured, "cells": [sum(r.key in seen for r in mine), len(mine)],
            "dropped": [dict(d.__dict__) for d in curve.dropped]}


def _total(rows: Iterable[CellRow], column: str) -> float:
    return sum(r.get(column) or 0 for r in rows)


def _share(used: float, total: float) -> dict[str, float]:
    return {"used": used, "total": total, "fraction": used / total if total else 0.0}
