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
``OUT/study.json`` and ``OUT/index.html`` summarise the parts. Re-running skips finished
cells; ``--only PART`` runs one part.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from capgap import config as cfgmod
from capgap.errors import CapgapError
from capgap.io import write_json, write_text
from capgap.sweep.config import SweepConfig

STUDY_RECORD = "study.json"
NE_LAW = "law_non_embedding.json"
FINDINGS = "findings.json"


@dataclass
class StudyConfig:
    """``capgap study``: a base sweep and the parts that overlay it."""

    base: dict[str, Any] = field(default_factory=dict)
    """A sweep config (the ``capgap sweep`` YAML) shared by every part."""
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Part name -> keys laid over ``base`` (nested sections merge key by key)."""

    def validate(self) -> None:
        if not self.parts:
            raise CapgapError("parts: give at least one part (name: {overrides})")
        for name in self.parts:
            if not name or "/" in name or name.startswith("."):
                raise CapgapError(f"parts: {name!r} is not a usable folder name")
        for name in self.parts:
            self.sweep(name)  # every part must be a valid sweep before anything runs

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
    from capgap.sweep.runner import run_sweep

    out = Path(out)
    names = list(cfg.parts) if not only else only
    unknown = [n for n in names if n not in cfg.parts]
    if unknown:
        raise CapgapError(f"--only: no part {unknown[0]!r} (parts: {', '.join(cfg.parts)})")
    out.mkdir(parents=True, exist_ok=True)
    cfgmod.dump(cfg, out / "study.yaml")
    record = _load_record(out)
    for name in names:
        sweep = cfg.sweep(name)
        part_dir = out / name
        _share_teachers(sweep, out, part_dir)
        t0 = time.perf_counter()
        summary = run_sweep(sweep, part_dir, workers=workers, progress=progress)
        _fit_non_embedding(sweep, part_dir)
        _write_findings(sweep, part_dir)
        from capgap.report import build_report

        build_report(part_dir)
        entry = record["parts"].get(name, {})
        entry.update(summary.to_dict() | {"out": str(part_dir)})
        entry["wall_s_total"] = round(entry.get("wall_s_total", 0.0)
                                      + (time.perf_counter() - t0), 1)
        record["parts"][name] = entry
        write_json(out / STUDY_RECORD, _summarise(record, out))
    record = _summarise(record, out)
    write_json(out / STUDY_RECORD, record)
    write_text(out / "index.html", _index(record, out))
    return record


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
    text = json.dumps(cfgmod.to_dict(pre), sort_keys=True, default=str)
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
    from capgap.sweep.runner import fit_setting, primary_where

    write_json(part_dir / NE_LAW,
               fit_setting(sweep, part_dir, primary_where(sweep), size="non_embedding"))


def _write_findings(sweep: SweepConfig, part_dir: Path) -> None:
    """H1-H3 and the law for every setting of the part (``findings.json``)."""
    from capgap.report.findings import findings
    from capgap.sweep.runner import LAW_NAME, all_settings, primary_where
    from capgap.sweep.store import read_rows

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


def _summarise(record: dict[str, Any], out: Path) -> dict[str, Any]:
    from capgap.report.findings import law_summary
    from capgap.report.tables import status_counts
    from capgap.sweep.store import DB_NAME, read_rows

    for name, entry in record["parts"].items():
        part = out / name
        laws = {}
        for unit, file in (("total", "law.json"), ("non_embedding", NE_LAW)):
            path = part / file
            laws[unit] = law_summary(json.loads(path.read_text()) if path.is_file() else None)
        entry["laws"] = laws
        if (part / FINDINGS).is_file():
            entry["findings"] = [
                {"where": f["where"], "h1": f["h1"]["verdict"], "h2": f["h2"]["verdict"],
                 "h3": f["h3"]["verdict"], "law": f["law"].get("status"),
                 "ratio": f["law"].get("ratio"), "ratio_ci": f["law"].get("ratio_ci")}
                for f in json.loads((part / FINDINGS).read_text(encoding="utf-8"))]
        if (part / DB_NAME).is_file():
            entry["status_counts"] = status_counts(read_rows(part))
    return record


def _index(record: dict[str, Any], out: Path) -> str:
    from capgap.report.findings import findings_lines

    rows, details = [], []
    for name, entry in record["parts"].items():
        counts = ", ".join(f"{n} {s}" for s, n in sorted(entry.get("status_counts", {}).items()))
        laws = []
        for unit, law in entry.get("laws", {}).items():
            if law.get("status") == "ok":
                laws.append(f"{unit}: T* = {law['ratio']:.3g}·S "
                            f"[{law['ratio_ci'][0]:.3g}, {law['ratio_ci'][1]:.3g}]")
            else:
                laws.append(f"{unit}: {law.get('status')} — {law.get('reason', '')}")
        rows.append(f"<tr><td><a href='{html.escape(name)}/report/index.html'>"
                    f"{html.escape(name)}</a></td><td>{html.escape(counts)}</td>"
                    f"<td>{html.escape(str(entry.get('wall_s_total', '')))}</td>"
                    f"<td>{'<br>'.join(html.escape(x) for x in laws)}</td></tr>")
        path = out / name / FINDINGS
        if path.is_file():
            text = "\n".join(line for f in json.loads(path.read_text(encoding="utf-8"))
                             for line in findings_lines(f))
            details.append(f"<h2>{html.escape(name)}</h2><pre>{html.escape(text)}</pre>")
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}td{padding:4px 8px}"
    return ("<!doctype html><html><head><meta charset='utf-8'><title>capgap study</title>"
            f"<style>{style}</style></head><body><h1>capgap study</h1>"
            "<table border=1><tr><th>part</th><th>cells</th><th>wall s</th><th>law</th></tr>"
            f"{''.join(rows)}</table>{''.join(details)}</body></html>\n")
