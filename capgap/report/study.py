"""The study's human views: ``index.html`` (links to every part's report, the laws, the
cross-part synthesis and its figure) and ``summary.md`` (the same in Markdown, for a README or
a review). Both are generated from ``study.json`` and the parts' ``findings.json``."""

from __future__ import annotations

import html
from typing import Any

from capgap.law.bracket import bracket_text
from capgap.report.findings import PAPER_RATIO, findings_lines
from capgap.report.synthesis import control_line, optimum_line

BUDGET_IMAGE = "optimum_vs_budget.png"
CONTROL_IMAGE = "control.png"
SCRATCH_IMAGE = "scratch.png"
BESIDE_PAPER = (  # synthesis key, section title, figure, what it shows
    ("control", "Same-init control", CONTROL_IMAGE,
     "One student initialisation distilled from every teacher, beside the paper's students "
     "pruned from their own teachers (same size, budget, seeds). Gains are over the "
     "no-teacher baseline of the same initialisation."),
    ("scratch", "Scratch-initialised students", SCRATCH_IMAGE,
     "Students with the shape pruning from each teacher gives but random weights, beside the "
     "paper's pruned students (same size, budget, seeds). Gains are over the no-teacher "
     "baseline of the same shape and initialisation."),
)


def law_text(unit: str, law: dict[str, Any]) -> str:
    """``total: T* = 6.1·S [4.2, 8.0] (R² 0.91, 3 sizes)`` or why there is no fit."""
    if law.get("status") == "ok":
        r2 = law.get("ratio_r2")
        return (f"{unit}: T* = {law['ratio']:.3g}·S [{law['ratio_ci'][0]:.3g}, "
                f"{law['ratio_ci'][1]:.3g}]; line T* = {law['slope']:.3g}·S + "
                f"{law['intercept']:.3g} (R² {law['r2']:.3f}"
                + ("" if r2 is None else f", ratio R² {r2:.3f}")
                + f", {law.get('n_points')} sizes)")
    reason = (law.get("reason") or "").split(": ")[0]  # the why is in each part's findings
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


def _totals(record: dict[str, Any]) -> str:
    done = sum(e.get("status_counts", {}).get("done", 0) for e in record["parts"].values())
    wall = record.get("busy_s", 0.0)
    c = record.get("compute_s", {})
    return (f"{done} cells done; compute {c.get('cells', 0) / 3600:.2f} worker-hours in cells "
            f"and students + {c.get('teacher pretraining', 0) / 3600:.2f} in teacher "
            f"pretraining (each family once); cells ran during {wall / 3600:.2f} h of wall time "
            f"(parallel workers overlap)")


def sections(record: dict[str, Any], findings: dict[str, list[dict[str, Any]]],
             figures: dict[str, bool] | None = None) -> list[dict[str, Any]]:
    """The study's views as format-free sections: ``title``, optional ``text``, ``image``,
    ``pre`` (preformatted lines) and ``parts`` (the part table). ``summary.md`` and
    ``index.html`` render the same list, so they cannot drift apart. ``figures`` says which
    images were written (all assumed when None)."""
    syn = record.get("synthesis", {})

    def image(name: str) -> str | None:
        return name if figures is None or figures.get(name) else None

    out: list[dict[str, Any]] = [{
        "title": "Parts", "parts": part_rows(record),
        "text": f"The paper's ratio is ~{PAPER_RATIO}x. {syn.get('rule', '')}. "
                f"Totals: {_totals(record)}."}]
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
    for key, title, figure, text in BESIDE_PAPER:
        if syn.get(key):
            out.append({"title": title, "text": text, "image": image(figure),
                        "pre": [line for c in syn[key] for line in control_line(c)]})
    other = [g for g in syn.get("optima", []) if g not in budget]
    if other:
        out.append({"title": "Every other group (objectives, families, inits, controls)",
                    "pre": [f"{g['family']} / {g['objective']} / {g['init']} / {g['source']}: "
                            + optimum_line(g) for g in other]})
    for name, items in findings.items():
        out.append({"title": f"{name}: H1-H3 per setting",
                    "pre": [line for f in items for line in findings_lines(f)]})
    return out


_PART_HEAD = ("part", "cells", "compute", "wall", "laws (total and non-embedding parameters)")


def summary_markdown(record: dict[str, Any], findings: dict[str, list[dict[str, Any]]],
                     figures: dict[str, bool] | None = None) -> str:
    """``summary.md``: the sections in Markdown, for a README or a review."""
    lines = ["# capgap study — generated summary", "",
             "Written by `capgap study` from the parts' databases; do not edit by hand."]
    for sec in sections(record, findings, figures):
        lines += ["", f"## {sec['title']}", ""]
        if sec.get("text"):
            lines += [sec["text"], ""]
        if sec.get("parts") is not None:
            lines += ["| " + " | ".join(_PART_HEAD) + " |", "|---" * len(_PART_HEAD) + "|"]
            lines += [f"| {r['part']} | {r['cells']} | {r['compute']} | {r['wall']} | "
                      f"{'<br>'.join(r['laws'])} |" for r in sec["parts"]]
        if sec.get("image"):
            lines += [f"![{sec['title']}]({sec['image']})", ""]
        if sec.get("pre"):
            lines += ["```", *sec["pre"], "```"]
    return "\n".join(lines).rstrip() + "\n"


def index_html(record: dict[str, Any], findings: dict[str, list[dict[str, Any]]],
               figures: dict[str, bool] | None = None) -> str:
    """``index.html``: the same sections, each part linked to its own report."""
    esc = html.escape
    body = ["<h1>capgap study</h1>"]
    for sec in sections(record, findings, figures):
        body.append(f"<h2>{esc(sec['title'])}</h2>")
        if sec.get("text"):
            body.append(f"<p>{esc(sec['text'])}</p>")
        if sec.get("parts") is not None:
            body.append("<table border=1><tr>" + "".join(f"<th>{esc(h)}</th>" for h in _PART_HEAD)
                        + "</tr>")
            body += [f"<tr><td><a href='{esc(r['part'])}/report/index.html'>{esc(r['part'])}"
                     f"</a></td><td>{esc(r['cells'])}</td><td>{esc(r['compute'])}</td>"
                     f"<td>{esc(r['wall'])}</td><td>{'<br>'.join(esc(x) for x in r['laws'])}"
                     "</td></tr>" for r in sec["parts"]]
            body.append("</table>")
        if sec.get("image"):
            body.append(f"<img src='{esc(sec['image'])}' alt='{esc(sec['title'])}'>")
        if sec.get("pre"):
            body.append(f"<pre>{esc(chr(10).join(sec['pre']))}</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}td{padding:4px 8px}"
             "img{max-width:100%}pre{font-size:12px;overflow-x:auto}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>capgap study</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
