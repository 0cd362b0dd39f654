"""The study's human views: ``index.html`` (links to every part's report, the laws, the
cross-part synthesis and its figure) and ``summary.md`` (the same in Markdown, for a README or
a review). Both are generated from ``study.json`` alone."""

from __future__ import annotations

import html
from typing import Any

from capgap.law.bracket import bracket_text, common_text, ratio_text
from capgap.report.findings import findings_lines
from capgap.report.html import FLOPS_IMAGE, FLOPS_JSON
from capgap.report.synthesis import control_line, holdout_lines, optimum_line, relative_line
from capgap.results.defaults import PAPER_RATIO
from capgap.results.regime import regime_line

BUDGET_IMAGE = "optimum_vs_budget.png"
PENALTY_IMAGE = "loss_vs_teacher.png"
CONTROL_IMAGE = "control.png"
SCRATCH_IMAGE = "scratch.png"
OBJECTIVES_IMAGE = "objectives.png"
ALLOCATION_IMAGE = "allocation.png"
HOLDOUT_IMAGE = "holdout.png"
BESIDE_PAPER = (  # synthesis key, section title, figure, what it shows
    ("control", "Same-init control", CONTROL_IMAGE,
     "One student initialisation distilled from every teacher, beside the paper's students "
     "pruned from their own teachers (same size, budget, seeds). Gains are over the "
     "no-teacher baseline of the same initialisation."),
    ("scratch", "Scratch-initialised students", SCRATCH_IMAGE,
     "Students with the shape pruning from each teacher gives but random weights, beside the "
     "paper's pruned students (same size, budget, seeds). Gains are over the no-teacher "
     "baseline of the same shape and initialisation."),
    ("allocation", "Pruning allocation", ALLOCATION_IMAGE,
     "Students pruned from each teacher with another allocation (uniform: the same count of "
     "heads and neurons in every layer, as MiniMA's 7B->3B) beside the study's (global: ranked "
     "across layers), same size, budget and seeds. Gains are over the no-teacher baseline "
     "pruned the same way."),
)


def law_text(unit: str, law: dict[str, Any]) -> str:
    """``total: T* = 6.1·S [4.2, 8.0] (R² 0.91, 3 sizes)`` or why there is no fit."""
    if law.get("status") == "ok":
        r2 = law.get("ratio_r2")
        return (f"{unit}: {ratio_text(law)}; line T* = {law['slope']:.3g}·S + "
                f"{law['intercept']:.3g} (R² {law['r2']:.3f}"
                + ("" if r2 is None else f", ratio R² {r2:.3f}")
                + f", {law.get('n_points')} sizes)")
    reason = (law.get("reason") or "").split(": ")[0]  # the why is in the findings
    text = f"{unit}: {law.get('status')} — {reason}".rstrip(" —")
    return text + (f"; bracket: {bracket_text(law['bracket'])}" if law.get("bracket") else "")


def pooled_line(law: dict[str, Any]) -> str:
    """``pythia-micro, 2,000,000 tok, seeds 0,1,2 (largest+seeds): total: T* = ...``."""
    seeds = ",".join(str(x) for x in law.get("seeds", []))
    return (f"{law['family']}, {law['objective']}, {law['tokens']:,} tok, seeds {seeds} "
            f"({'+'.join(law.get('parts', []))}): {law_text(law['unit'], law)}")


def part_rows(record: dict[str, Any]) -> list[dict[str, str]]:
    """One row per part: cells by status, worker-hours, wall time while cells ran, laws."""
    out = []
    for name, entry in record["parts"].items():
        counts = ", ".join(f"{n} {s}" for s, n in sorted(entry.get("status_counts", {}).items()))
        wall = entry.get("busy_s")
        cells = sum(v for k, v in entry.get("compute_s", {}).items()
                    if k != "teacher pretraining")
        out.append({"part": name, "cells": counts or "none",
                    "wall": "-" if wall is None else f"{wall / 3600:.2f} h",
                    "compute": f"{cells / 3600:.2f} h",
                    "laws": [law_text(u, law) for u, law in entry.get("laws", {}).items()]})
    return out


def regime_rows(record: dict[str, Any]) -> list[str]:
    """One line per teacher family the parts used (parts named), from their ``regime``."""
    by_family: dict[str, tuple[list[str], dict[str, Any]]] = {}
    for name, entry in record["parts"].items():
        regime = entry.get("regime")
        if regime:
            by_family.setdefault(regime.get("family") or name, ([], regime))[0].append(name)
    return [f"{family} ({', '.join(parts)}): {regime_line(regime)}"
            for family, (parts, regime) in by_family.items()]


def _totals(record: dict[str, Any]) -> str:
    done = sum(e.get("status_counts", {}).get("done", 0) for e in record["parts"].values())
    wall = record.get("busy_s", 0.0)
    left = sum(e.get("left_s", 0.0) for e in record["parts"].values())
    c = record.get("compute_s", {})
    return (f"{done} cells done; compute {c.get('cells', 0) / 3600:.2f} worker-hours in cells "
            f"and students + {c.get('teacher pretraining', 0) / 3600:.2f} in teacher "
            f"pretraining (each family once); cells ran during {wall / 3600:.2f} h of wall time "
            f"(parallel workers overlap)"
            + (f"; about {left / 3600:.1f} worker-hours left in the parts begun (estimated "
               "from the finished cells)" if left else ""))


def sections(record: dict[str, Any],
             figures: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """The study's views as format-free sections: ``title``, optional ``text``, ``image``,
    ``pre`` (preformatted lines) and ``table`` (``head``, ``rows``, optional ``links`` for
    the first column). ``summary.md`` and
    ``index.html`` render the same list, so they cannot drift apart. ``figures`` says which
    images were written (all assumed when None)."""
    syn = record.get("synthesis", {})

    def image(name: str) -> str | None:
        return name if figures is None or figures.get(name) else None

    parts = part_rows(record)
    out: list[dict[str, Any]] = [{
        "title": "Parts",
        "table": {"head": list(_PART_HEAD),
                  "rows": [[r["part"], r["cells"], r["compute"], r["wall"], r["laws"]]
                           for r in parts],
                  "links": [f"{r['part']}/report/index.html" for r in parts]},
        "text": f"The paper's ratio is ~{PAPER_RATIO}x. {syn.get('rule', '')}. "
                f"Totals: {_totals(record)}."}]
    regimes = regime_rows(record)
    if regimes:
        out.insert(0, {"title": "Regime per teacher family",
                       "text": "From each family's regime.json (written when capgap pretrained "
                               "it; copied into each part's folder).",
                       "pre": regimes})
    glance = glance_rows(syn.get("laws", []))
    if glance:
        out.insert(0, {"title": "At a glance: the paper's setting per budget",
                       "text": "Own-pruned students pooled over parts. Interior: sizes whose "
                               "best teacher is inside the teachers tried (a law needs 3). "
                               "Bracket: the T*/S one law could have given every size's best "
                               "teacher and its neighbours (a bound from the grid, not a "
                               "confidence interval).",
                       "table": {"head": list(_GLANCE_HEAD), "rows": glance}})
    if syn.get("laws"):
        out.append({"title": "The law per budget, pooled over parts",
                    "text": "Every own-pruned cell of the paper's setting at that budget, "
                            "whichever part ran it (files under `laws/`).",
                    "pre": [pooled_line(law) for law in syn["laws"]]})
    budget = syn.get("budget", [])
    if budget:
        p = syn["primary"]
        out.append({"title": f"How the optimum moves with the budget ({p['family']}, "
                             f"{p['objective']}, own-pruned students)",
                    "image": image(BUDGET_IMAGE),
                    "pre": [optimum_line(g) for g in budget]})
        out.append({"title": "Every teacher against the smallest, per budget",
                    "text": "Each teacher's distilled loss minus the smallest teacher's "
                            "(negative: the larger teacher wins). The larger teachers' penalty "
                            "(pruning damage net of their gain) shrinking with the budget is "
                            "the optimum moving up before it shows as a change of argmin.",
                    "image": image(PENALTY_IMAGE),
                    "pre": [relative_line(g) for g in budget]})
    if image(FLOPS_IMAGE):
        out.append({"title": "Loss against compute, pooled over parts",
                    "text": "Every own-pruned distilled cell of the paper's setting against its "
                            "model FLOPs (teacher forward + student training + scoring): one "
                            "line per student size and budget through its teachers, smallest "
                            f"first; a size keeps its colour across budgets (points: `{FLOPS_JSON}`).",
                    "image": image(FLOPS_IMAGE)})
    for key, title, figure, text in BESIDE_PAPER:
        if syn.get(key):
            out.append({"title": title, "text": text, "image": image(figure),
                        "pre": [line for c in syn[key] for line in control_line(c)]})
    if syn.get("objectives"):
        out.append({"title": "Objectives side by side (own-pruned students)",
                    "text": "Every budget run with more than one distillation objective; gains "
                            "are over the same no-teacher baseline, so the objectives compare "
                            "directly.",
                    "image": image(OBJECTIVES_IMAGE),
                    "pre": [f"{g['objective']}: " + optimum_line(g)
                            for g in syn["objectives"]]})
    shown = budget + syn.get("objectives", [])
    allocation = syn.get("primary", {}).get("allocation")
    other = [g for g in syn.get("optima", []) if g not in shown and g["source"] == "own"
             and g["init"] == "pruned" and g["allocation"] == (allocation or g["allocation"])]
    # controls, scratch and other allocations have sections of their own
    if other:
        out.append({"title": "Every other group of the paper's setting (families, budgets)",
                    "pre": [f"{g['family']} / {g['objective']} / {g['init']} / {g['source']}: "
                            + optimum_line(g) for g in other]})
    if record.get("holdout"):
        out.append({"title": "The budget-aware law on cells it never saw",
                    "text": "Busbridge et al.'s student-loss law with capgap's pruning-damage "
                            "term, fitted on every cell but the held-out ones, then asked for "
                            "those (`holdout.json`, `budget_law.json`).",
                    "image": image(HOLDOUT_IMAGE), "pre": holdout_lines(record["holdout"])})
    if syn.get("findings"):
        out.append({"title": "H1-H3 per budget, pooled over parts",
                    "text": "The paper's setting (own-pruned students) per family, objective "
                            "and budget, on every part's cells, each paired with its no-teacher "
                            "baseline whichever part ran it; seed noise is measured where a "
                            "teacher has several seeds. Each part's own answers are in its "
                            "`findings.json` and report.",
                    "pre": [line for f in syn["findings"] for line in findings_lines(f)]})
    return out


_PART_HEAD = ("part", "cells", "compute", "wall", "laws (total and non-embedding parameters)")
_GLANCE_HEAD = ("family", "objective (allocation)", "budget", "seeds", "H1 gap matters; teacher's own effect",
                "H2 interior", "H3", "law (total)",
                f"T*/S bracket, total (paper {PAPER_RATIO:g}x)", "T*/S bracket, non-embedding")


def glance_rows(laws: list[dict[str, Any]]) -> list[list[str]]:
    """One row per pooled budget: the hypotheses' verdicts, the law or its status, both
    brackets. The allocation is named only where the laws have more than one."""
    def bracket(law: dict[str, Any] | None) -> str:
        b = (law or {}).get("bracket") or {}
        if not b.get("n_sizes"):
            return "-"
        if b["common"] is None:
            return "no single ratio"
        where = ("" if b.get("reference_inside") is None else
                 " (inside)" if b["reference_inside"] else " (outside)")
        return f"{common_text(b)}{where}"

    by_key: dict[tuple, dict[str, dict[str, Any]]] = {}
    for law in laws:
        key = (law["family"], law["objective"], law["allocation"], law["tokens"])
        by_key.setdefault(key, {})[law["unit"]] = law
    several = len({law["allocation"] for law in laws}) > 1
    rows = []
    for (family, objective, allocation, tokens), units in sorted(by_key.items()):
        total = units.get("total") or {}
        n = ((total.get("bracket") or {}).get("n_sizes"))
        fit = ratio_text(total) if total.get("status") == "ok" else str(total.get("status", "-"))
        hyp = total.get("hypotheses") or {}
        effect = hyp.get("teacher_effect") or [0, 0]
        h1 = (f"{hyp['h1']}; own effect in {effect[0]} of {effect[1]}" if effect[1]
              else hyp.get("h1", "-"))
        interior = (hyp.get("interior") or
                    [total.get("n_points", 0), n if n is not None else "?"])
        rows.append([family, f"{objective} ({allocation})" if several else objective,
                     f"{tokens:,}",
                     _seeds_text(total), h1,
                     f"{interior[0]} of {interior[1]}"
                     + (f" ({hyp['resolved']} beyond noise)" if interior[0] and
                        hyp.get("resolved") is not None else ""), hyp.get("h3", "-"), fit,
                     bracket(total), bracket(units.get("non_embedding"))])
    return rows


def _seeds_text(law: dict[str, Any]) -> str:
    """``0,1,2``, or ``0,1 (all in 1 of 3 sizes)`` while some sizes still miss a seed (their
    teachers are compared on the seeds they share)."""
    seeds = law.get("seeds", [])
    text = ",".join(str(x) for x in seeds)
    used = law.get("seeds_used") or {}
    full = sum(1 for v in used.values() if len(v) == len(seeds))
    return text if full == len(used) else f"{text} (all in {full} of {len(used)} sizes)"


def _cell(value: str | list[str], fmt: Any) -> str:
    """A table cell: one string, or several lines joined by <br> (``fmt`` escapes each)."""
    return "<br>".join(fmt(v) for v in value) if isinstance(value, list) else fmt(value)


def summary_markdown(record: dict[str, Any], figures: dict[str, bool] | None = None) -> str:
    """``summary.md``: the sections in Markdown, for a README or a review."""
    lines = ["# capgap study — generated summary", "",
             "Written by `capgap study` from the parts' databases; do not edit by hand."]
    for sec in sections(record, figures):
        lines += ["", f"## {sec['title']}", ""]
        if sec.get("text"):
            lines += [sec["text"], ""]
        if sec.get("table"):
            head = sec["table"]["head"]
            lines += ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
            lines += ["| " + " | ".join(_cell(c, str) for c in row) + " |"
                      for row in sec["table"]["rows"]]
        if sec.get("image"):
            lines += [f"![{sec['title']}]({sec['image']})", ""]
        if sec.get("pre"):
            lines += ["```", *sec["pre"], "```"]
    return "\n".join(lines).rstrip() + "\n"


def index_html(record: dict[str, Any], figures: dict[str, bool] | None = None) -> str:
    """``index.html``: the same sections, each part linked to its own report."""
    esc = html.escape
    body = ["<h1>capgap study</h1>"]
    for sec in sections(record, figures):
        body.append(f"<h2>{esc(sec['title'])}</h2>")
        if sec.get("text"):
            body.append(f"<p>{esc(sec['text'])}</p>")
        if sec.get("table"):
            table = sec["table"]
            links = table.get("links") or [None] * len(table["rows"])
            body.append("<table border=1><tr>" + "".join(f"<th>{esc(h)}</th>"
                                                         for h in table["head"]) + "</tr>")
            for row, link in zip(table["rows"], links, strict=True):
                cells = [_cell(c, esc) for c in row]
                if link:
                    cells[0] = f"<a href='{esc(link)}'>{cells[0]}</a>"
                body.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
            body.append("</table>")
        if sec.get("image"):
            body.append(f"<img src='{esc(sec['image'])}' alt='{esc(sec['title'])}'>")
        if sec.get("pre"):
            body.append(f"<pre>{esc(chr(10).join(sec['pre']))}</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}td{padding:4px 8px}"
             "img{max-width:100%}pre{font-size:12px;overflow-x:auto}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>capgap study</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
