"""A study: several sweeps that share their teachers, run in order, each resumable.

One sweep is one grid. The questions a study asks (does the optimum move with the budget?
does a same-init control change the picture? does another architecture or objective give
the same law?) need grids of different shapes, so a study is a ``base`` sweep config and
named ``parts`` that each overlay it::

    base:   {teachers: {pretrain: ...}, students: {sizes: [...]}, ...}
    parts:
      budgets: {tokens: [150000, 500000, 2000000], seeds: [0, 1, 2]}
      control: {students: {prune_from: T0, sizes: [300000]}, tokens: [2000000]}

Each part is a sweep folder ``OUT/<part>/`` (results.sqlite, law.json, report/). Parts
whose teachers are the same pretrained family share one ``OUT/teachers/<family>-<hash>/``
(linked as ``OUT/<part>/teachers``), so a family is trained once. Every part's law is
fitted in total and in non-embedding parameters (``law.json``, ``law_non_embedding.json``);
``OUT/study.json``, ``OUT/index.html`` and ``OUT/summary.md`` summarise the parts and add what
needs several parts at once (how the optimum moves with the budget, the same-init control;
:mod:`capgap.report.synthesis`). Re-running skips finished cells; ``--only PART`` runs one
part; ``--report`` (:func:`report_study`) rebuilds every view from the data without training.

A study sits above the sweep, the law and the report: it runs sweeps, fits their laws and
renders their views, and none of those imports it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capgap import config as cfgmod
from capgap.errors import CapgapError
from capgap.io import write_json, write_text
from capgap.law.budget import measured_losses
from capgap.law.holdout import holdout, setting_cells
from capgap.report import build_report
from capgap.report.html import FLOPS_IMAGE, flops_figure
from capgap.report.study import (
    ALLOCATION_IMAGE,
    BUDGET_IMAGE,
    CONTROL_IMAGE,
    HOLDOUT_IMAGE,
    OBJECTIVES_IMAGE,
    PENALTY_IMAGE,
    SCRATCH_IMAGE,
    index_html,
    summary_markdown,
)
from capgap.report.synthesis import (
    budget_figure,
    control_figure,
    holdout_figure,
    objectives_figure,
    penalty_figure,
)
from capgap.results.accounting import busy_seconds, compute_rows, left_seconds, status_counts
from capgap.results.findings import findings, hypotheses, law_summary
from capgap.results.optimum import shared_seeds_by
from capgap.results.regime import REGIME, describe_regime, find_regime, read_regime, teacher_losses
from capgap.results.rows import CellRow, PartRow
from capgap.results.store import DB_NAME, LAW_NAME, read_rows
from capgap.results.synthesis import pooled_rows, synthesis, tag_rows
from capgap.sweep.config import SweepConfig
from capgap.sweep.runner import (
    all_settings,
    fit_rows,
    fit_setting,
    fit_sweep_law,
    primary_where,
    run_sweep,
)
from capgap.train.loop import result_settings

STUDY_RECORD = "study.json"
HOLDOUT = "holdout.json"
BUDGET_LAW = "budget_law.json"
NE_LAW = "law_non_embedding.json"
FINDINGS = "findings.json"
SUMMARY = "summary.md"


@dataclass
class HoldoutConfig:
    """Validate the budget-aware law on cells it never saw (``OUT/holdout.json``)."""

    hold_out: dict[str, list[Any]] = field(default_factory=dict)
    """Column -> values whose cells the fit never sees, e.g. ``{tokens: [2e6],
    student_target: [400000]}`` (a larger budget, a size never fitted)."""
    parts: list[str] = field(default_factory=list)
    """Parts whose cells are pooled (one teacher family); default: every part that shares
    the first part's teachers (a part of another family has its own teachers' losses)."""
    bootstrap: int = 200
    """Bootstrap refits of the law fitted on the kept cells."""

    def validate(self) -> None:
        if not self.hold_out or not any(self.hold_out.values()):
            raise CapgapError("holdout.hold_out: give a column and the values to hold out, "
                              "e.g. {tokens: [2e6]}")
        if self.bootstrap < 0:
            raise CapgapError(f"holdout.bootstrap must be >= 0, got {self.bootstrap}")


@dataclass
class StudyConfig:
    """``capgap study``: a base sweep and the parts that overlay it."""
    base: dict[str, Any] = field(default_factory=dict)
    """A sweep config (the ``capgap sweep`` YAML) shared by every part."""
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Part name -> keys laid over ``base`` (nested sections merge key by key)."""
    holdout: HoldoutConfig | None = None
    """Fit the budget-aware law on some cells and predict the others (None: no such check)."""
    def validate(self) -> None:
        if not self.parts:
            raise CapgapError("parts: give at least one part (name: {overrides})")
        for name in self.parts:
            if not name or "/" in name or name.startswith("."):
                raise CapgapError(f"parts: {name!r} is not a usable folder name")
        for name in self.parts:
            self.sweep(name)  # every part must be a valid sweep before anything runs
        if self.holdout is not None:
            unknown = [p for p in self.holdout.parts if p not in self.parts]
            if unknown:
                raise CapgapError(f"holdout.parts: no part {unknown[0]!r} "
                                  f"(parts: {', '.join(self.parts)})")
            if len({family_key(self.sweep(p)) for p in self.holdout_parts()}) != 1:
                raise CapgapError("holdout.parts: the pooled parts must pretrain one teacher "
                                  "family (the law needs each teacher's loss from its regime.json)")

    def holdout_parts(self) -> list[str]:
        """The parts whose cells the held-out check pools: ``holdout.parts``, else every part
        whose teachers are the first part's."""
        if self.holdout and self.holdout.parts:
            return list(self.holdout.parts)
        keys = {name: family_key(self.sweep(name)) for name in self.parts}
        first = keys[next(iter(self.parts))]
        return [name for name, key in keys.items() if key == first]

    def sweep(self, name: str) -> SweepConfig:
        """The resolved sweep config of part ``name``."""
        if name not in self.parts:
            raise CapgapError(f"no part {name!r} (parts: {', '.join(self.parts)})")
        merged = cfgmod.merge_dicts(self.base, self.parts[name] or {})
        try:
            return cfgmod.from_dict(SweepConfig, merged, where=f"parts.{name}")
        except CapgapError as e:
            text = str(e)
            raise CapgapError(text if text.startswith("parts.") else f"parts.{name}: {text}") \
                from None


def run_study(cfg: StudyConfig, out: str | Path, *, only: list[str] | None = None,
              workers: int | None = None, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) the parts of ``cfg`` in order into ``out``; return ``study.json``."""
    cfg = cfgmod.checked(cfg)
    out = Path(out)
    names = list(cfg.parts) if not only else only
    unknown = [n for n in names if n not in cfg.parts]
    if unknown:
        raise CapgapError(f"--only: no part {unknown[0]!r} (parts: {', '.join(cfg.parts)})")
    out.mkdir(parents=True, exist_ok=True)
    cfgmod.dump(cfg, out / "study.yaml")
    record = _load_record(out)
    unpublished = False
    for i, name in enumerate(names):
        sweep = cfg.sweep(name)
        part_dir = out / name
        _share_teachers(sweep, out, part_dir)
        t0 = time.perf_counter()
        summary = run_sweep(sweep, part_dir, workers=workers, progress=progress)
        new = summary.ran > 0 or summary.failed > 0 or not (part_dir / FINDINGS).is_file()
        if new:
            _finish_part(sweep, part_dir)
        entry = record["parts"].get(name, {})
        entry.update(summary.to_dict() | {"out": str(part_dir)})
        entry["wall_s_total"] = round(entry.get("wall_s_total", 0.0)
                                      + (time.perf_counter() - t0), 1)
        record["parts"][name] = entry
        unpublished = unpublished or not new
        if new or (unpublished and i == len(names) - 1):
            # every view is current after every part that added cells; a resume that finds
            # parts done publishes once (``--report`` refits everything on demand)
            record = _publish(cfg, record, out)
            unpublished = False
    return record


def report_study(cfg: StudyConfig, out: str | Path) -> dict[str, Any]:
    """Refit and re-report every part that has a database, running nothing: the laws,
    findings and reports of parts still in progress (or being run by another process, whose
    databases are read read-only), then ``study.json``, ``index.html`` and ``summary.md``."""
    out = Path(out)
    if not out.is_dir():
        raise CapgapError(f"{out}: no study folder (run `capgap study --out {out}` first)")
    record = _load_record(out)
    for name in cfg.parts:
        part_dir = out / name
        if not (part_dir / DB_NAME).is_file():
            continue
        sweep = cfg.sweep(name)
        fit_sweep_law(sweep, part_dir)
        _finish_part(sweep, part_dir)
        record["parts"].setdefault(name, {"out": str(part_dir)})
    return _publish(cfg, record, out)


def _finish_part(sweep: SweepConfig, part_dir: Path) -> None:
    """What a part adds to its sweep's own law: the non-embedding fit, findings, report."""
    _fit_non_embedding(sweep, part_dir)
    _write_findings(sweep, part_dir)
    build_report(part_dir)


def _publish(cfg: StudyConfig, record: dict[str, Any], out: Path) -> dict[str, Any]:
    """Summarise the parts, add the cross-part synthesis, write the study's views."""
    rows = {name: read_rows(out / name) for name in record["parts"]
            if (out / name / DB_NAME).is_file()}  # each part's database read once
    record = _summarise(record, rows, out, _family_names(cfg))
    tagged = _tagged(cfg, rows)
    record["synthesis"] = _synthesis(cfg, tagged, out)
    syn = record["synthesis"]
    primary = syn.get("primary", {})
    setting = {k: primary[k] for k in ("family", "objective", "allocation") if k in primary}
    brackets = {law["tokens"]: (law.get("bracket") or {}).get("common")
                for law in syn["laws"] if law["unit"] == "total"
                and law["family"] == primary.get("family")
                and law["objective"] == primary.get("objective")
                and law["allocation"] == primary.get("allocation")}
    figures = {BUDGET_IMAGE: budget_figure(syn["budget"], out / BUDGET_IMAGE, brackets),
               PENALTY_IMAGE: penalty_figure(syn["budget"], out / PENALTY_IMAGE),
               CONTROL_IMAGE: control_figure(syn["control"], out / CONTROL_IMAGE),
               SCRATCH_IMAGE: control_figure(syn["scratch"], out / SCRATCH_IMAGE),
               ALLOCATION_IMAGE: control_figure(syn["allocation"], out / ALLOCATION_IMAGE),
               OBJECTIVES_IMAGE: objectives_figure(syn["objectives"], out / OBJECTIVES_IMAGE),
               FLOPS_IMAGE: bool(setting) and flops_figure(
                   pooled_rows(tagged, **setting), out) is not None}
    if cfg.holdout is not None:
        record["holdout"] = holdout_check(cfg, rows, out)
        held = out / HOLDOUT if record["holdout"]["status"] == "ok" else None
        figures[HOLDOUT_IMAGE] = holdout_figure(
            json.loads(held.read_text(encoding="utf-8")) if held else None, out / HOLDOUT_IMAGE)
    write_json(out / STUDY_RECORD, record)
    write_text(out / "index.html", index_html(record, figures))
    write_text(out / SUMMARY, summary_markdown(record, figures))
    return record


def holdout_check(cfg: StudyConfig, part_rows: dict[str, list[CellRow]],
             out: Path) -> dict[str, Any]:
    """The held-out check of the budget-aware law on the pooled parts' cells of the first
    part's objective and allocation (own-pruned students and their baselines): writes
    ``holdout.json``, ``budget_law.json`` and the teachers' ``regime.json``; returns the
    headline figures, or why there are none yet."""
    assert cfg.holdout is not None
    names = cfg.holdout_parts()
    first = cfg.sweep(names[0])
    teachers = out / "teachers" / str(family_key(first))
    if not (out / "teachers").exists() and (out / REGIME).is_file():
        teachers = out  # a published study keeps the regime, not the teachers
    try:
        regime, _ = teacher_losses(teachers)
    except CapgapError:
        regime = {}
    if teachers != out and regime:
        write_text(out / REGIME, (teachers / REGIME).read_text(encoding="utf-8"))
    own = [dict(r) for name in names for r in part_rows.get(name, [])
           if r.init == "pruned" and r.cut_from == r.teacher]  # no controls, no scratch
    try:
        cells = setting_cells(own, first.objectives[0], first.students.allocations[0])
        measured = measured_losses(cells)  # on the students' eval text: preferred
        record, law = holdout(cells, regime | measured, cfg.holdout.hold_out,
                              bootstrap=cfg.holdout.bootstrap)
    except CapgapError as e:
        return {"status": "waiting", "reason": str(e)}
    record["parts"] = names
    record["teacher_losses"] = {t: {"loss": (regime | measured)[t],
                                    "from": "students' eval text" if t in measured
                                    else "pretraining eval (regime.json)"}
                                for t in sorted(regime.keys() | measured.keys())}
    write_json(out / HOLDOUT, record)
    write_json(out / BUDGET_LAW, law.to_dict())
    return {"status": "ok", "file": HOLDOUT} | {
        k: record[k] for k in ("fit_cells", "held_out_cells", "mae_nats", "seed_noise_nats",
                               "argmin_agreement", "argmin_within_noise")} | {
        "teacher_losses_from": sorted({v["from"] for v in record["teacher_losses"].values()}),
        "slices": [{k: s[k] for k in ("student_target", "tokens", "measured_best",
                                      "predicted_best", "best_share", "agree", "within_noise")}
                   for s in record["slices"]]}


def _tagged(cfg: StudyConfig, part_rows: dict[str, list[CellRow]]) -> list[PartRow]:
    """Every part's rows with their part, family and source (own or cut from another)."""
    families = _family_names(cfg)
    rows: list[PartRow] = []
    for name, mine in part_rows.items():
        if name in cfg.parts:
            sweep = cfg.sweep(name)
            rows += tag_rows(mine, name, families[name], sweep.students.prune_from)
    return rows


def _synthesis(cfg: StudyConfig, rows: list[PartRow], out: Path) -> dict[str, Any]:
    families = _family_names(cfg)
    first_name = next(iter(cfg.parts))
    first = cfg.sweep(first_name)
    out_syn = synthesis(rows, families[first_name], first.objectives[0],
                        first.students.allocations[0])
    paper = [g for g in out_syn["optima"] if g["init"] == "pruned" and g["source"] == "own"]
    out_syn["laws"], out_syn["findings"] = _pooled_laws(rows, paper, first.law_bootstrap, out)
    return out_syn


def _pooled_laws(rows: list[PartRow], groups: list[dict[str, Any]], n_boot: int,
                 out: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The paper's setting (own-pruned students) fitted per family, objective and budget on
    every part's cells at once (a budget's seeds may come from several parts), in total and
    non-embedding parameters, and H1-H3 answered on the same cells (paired with baselines
    from any part). Each law is written to ``OUT/laws/``; study.json keeps its headline and
    the hypotheses' verdicts, and the findings in full (total parameters)."""
    laws, found = [], []
    for key in sorted({(g["family"], g["objective"], g["allocation"], g["tokens"])
                       for g in groups}):
        family, objective, allocation, tokens = key
        match = {"family": family, "objective": objective, "allocation": allocation,
                 "tokens": tokens}
        mine = pooled_rows(rows, **match)
        paired = pooled_rows(rows, baselines=True, **match)
        where = {"objective": objective, "allocation": allocation, "init": "pruned",
                 "tokens": tokens}
        for unit in ("total", "non_embedding"):
            name = f"{family}-{objective}-{allocation}-{tokens}-{unit}.json"
            law = fit_rows(mine, where, unit, n_boot, "+".join(sorted({r.part for r in mine})))
            write_json(out / "laws" / name, law)
            answer = findings(paired, law, where)
            if unit == "total":
                found.append(answer | {"family": family})
            laws.append({"family": family, "objective": objective, "allocation": allocation,
                         "tokens": tokens, "unit": unit, "file": f"laws/{name}",
                         "parts": sorted({r.part for r in mine}),
                         "seeds": sorted({r.seed for r in mine}),
                         "seeds_used": _seeds_used(mine),
                         "hypotheses": hypotheses(answer)} | law_summary(law))
    return laws, found


def _seeds_used(rows: list[CellRow]) -> dict[str, list[int]]:
    """Per student size, the seeds its teachers are compared on (those they all have)."""
    sizes = shared_seeds_by(rows, lambda r: r.student_target, lambda r: r.teacher_params,
                            lambda r: r.seed)
    return {str(int(size)): sorted({r.seed for r in cells})
            for size, cells in sorted(sizes.items())}


def _family_names(cfg: StudyConfig) -> dict[str, str]:
    """Each part's teacher family as the synthesis pools it: the family's name (``models``
    for parts that bring their own), made unique with the pretraining hash where two parts
    share a name but not their teachers, so their cells are never pooled."""
    label, unique = {}, {}
    for name in cfg.parts:
        sweep = cfg.sweep(name)
        pre = sweep.teachers.pretrain
        label[name] = Path(pre.family).stem if pre is not None else "models"
        models = json.dumps(sweep.teachers.models, default=str).encode()
        unique[name] = family_key(sweep) or f"models-{hashlib.sha256(models).hexdigest()[:8]}"
    shared = {lab: {unique[n] for n in cfg.parts if label[n] == lab} for lab in label.values()}
    return {n: label[n] if len(shared[label[n]]) == 1 else unique[n] for n in cfg.parts}


def _part_regime(part: Path, family: str | None) -> dict[str, Any] | None:
    """The regime a part's teachers put it in (:func:`describe_regime`, with the family's
    name), or None where its teachers wrote no ``regime.json``. The teachers' file is copied
    into the part, so a published copy (no teachers folder) keeps every teacher's row."""
    source = part / "teachers" / REGIME
    if source.is_file():
        write_text(part / REGIME, source.read_text(encoding="utf-8"))
    if find_regime(part) is None:
        return None
    return {"family": family} | describe_regime(read_regime(part))


def _load_record(out: Path) -> dict[str, Any]:
    path = out / STUDY_RECORD
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {"parts": {}}


def family_key(sweep: SweepConfig) -> str | None:
    """A folder name for the pretrained family (None when the part brings its own models)."""
    pre = sweep.teachers.pretrain
    if pre is None:
        return None
    raw = cfgmod.to_dict(pre)
    raw["train"] = result_settings(raw["train"])
    if not raw.get("tokens_per_param"):  # newer than the committed studies: keep their keys
        raw.pop("tokens_per_param", None)
    text = json.dumps(raw, sort_keys=True, default=str)
    return f"{Path(pre.family).stem}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"


def _share_teachers(sweep: SweepConfig, out: Path, part_dir: Path) -> None:
    """Link ``part_dir/teachers`` to the study's copy of its family (trained once)."""
    key = family_key(sweep)
    if key is None:
        return
    shared = out / "teachers" / key
    shared.mkdir(parents=True, exist_ok=True)
    link = part_dir / "teachers"
    part_dir.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or not link.exists():
        if link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(shared, part_dir), link)


def _fit_non_embedding(sweep: SweepConfig, part_dir: Path) -> None:
    """The part's primary law again, in non-embedding parameters (embeddings dominate micro
    models, so the two units can disagree)."""
    write_json(part_dir / NE_LAW,
               fit_setting(sweep, part_dir, primary_where(sweep), size="non_embedding"))


def _write_findings(sweep: SweepConfig, part_dir: Path) -> None:
    """H1-H3 and the law for every setting of the part (``findings.json``)."""
    rows = read_rows(part_dir)
    settings = all_settings(sweep)
    out = []
    for where in settings:
        name = "-".join(str(v) for v in where.values())
        path = part_dir / (LAW_NAME if len(settings) == 1 or where == primary_where(sweep)
                           else f"laws/{name}.json")
        law = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        out.append(findings(rows, law, where))
    write_json(part_dir / FINDINGS, out)


def _summarise(record: dict[str, Any], part_rows: dict[str, list[CellRow]],
               out: Path, families: dict[str, str]) -> dict[str, Any]:
    every = [r for rows in part_rows.values() for r in rows]  # prices for unfinished cells
    for name, entry in record["parts"].items():
        part = out / name
        entry["regime"] = _part_regime(part, families.get(name)) or entry.get("regime")
        laws = {}
        for unit, file in (("total", LAW_NAME), ("non_embedding", NE_LAW)):
            path = part / file
            laws[unit] = law_summary(json.loads(path.read_text()) if path.is_file() else None)
        entry["laws"] = laws
        if (part / FINDINGS).is_file():
            entry["findings"] = [
                {"where": f["where"], **hypotheses(f), "law": f["law"].get("status"),
                 "ratio": f["law"].get("ratio"), "ratio_ci": f["law"].get("ratio_ci")}
                for f in json.loads((part / FINDINGS).read_text(encoding="utf-8"))]
        if name in part_rows:
            rows = part_rows[name]
            entry["status_counts"] = status_counts(rows)
            entry["busy_s"] = round(busy_seconds(rows), 1)
            entry["left_s"] = round(left_seconds(rows, every), 1)
            before = entry.get("compute_s", {}).get("teacher pretraining")
            entry["compute_s"] = {r["stage"]: round(r["seconds"], 1)
                                  for r in compute_rows(part, rows) if r["stage"] != "total"}
            if before and "teacher pretraining" not in entry["compute_s"]:
                entry["compute_s"]["teacher pretraining"] = before  # published without teachers
            if (part / "teachers").exists():  # a published copy has no teachers folder
                entry["teachers"] = os.path.relpath((part / "teachers").resolve(), out.resolve())
    record["busy_s"] = round(busy_seconds([r for rows in part_rows.values() for r in rows]), 1)
    families = {e["teachers"]: e["compute_s"].get("teacher pretraining", 0.0)
                for e in record["parts"].values() if "teachers" in e}
    record["compute_s"] = {  # worker-seconds: parallel workers overlap in wall time
        "teacher pretraining": round(sum(families.values()), 1),
        "cells": round(sum(v for e in record["parts"].values()
                           for k, v in e.get("compute_s", {}).items()
                           if k != "teacher pretraining"), 1)}
    return record
