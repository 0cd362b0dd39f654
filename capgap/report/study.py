"""The study's human views: ``index.html`` (links to every part's report, the laws, the
cross-part synthesis and its figure) and ``summary.md`` (the same in Markdown, for a README or
a review). Both are generated from ``study.json`` and the parts' ``findings.json``."""

from __future__ import annotations

import html
from typing import Any

from capgap.report.findings import PAPER_RATIO, findings_lines
from capgap.report.synthesis import control_line, optimum_line


def law_text(unit: str, law: dict[str, Any]) -> str:
    """``total: T* = 6.1·S [4.2, 8.0] (R² 0.91, 3 sizes)`` or why there is no fit."""
    if law.get("status") == "ok":
        r2 = law.get("ratio_r2")
        return (f"{unit}: T* = {law['ratio']:.3g}·S [{law['ratio_ci'][0]:.3g}, "
                f"{law['ratio_ci'][1]:.3g}]; line T* = {law['slope']:.3g}·S + "
                f"{law['intercept']:.3g} (R² {law['r2']:.3f}"
                + ("" if r2 is None else f", ratio R² {r2:.3f}")
                + f", {law.get('n_points')} sizes)")
    return f"{unit}: {law.get('status')} — {law.get('reason', '')}".rstrip(" —")


def pooled_line(law: dict[str, Any]) -> str:
    """``pythia-micro, 2,000,000 tok, seeds 0,1,2 (largest+seeds): total: T* = ...``."""
    seeds = ",".join(str(x) for x in law.get("seeds", []))
    return (f"{law['family']}, {law['objective']}, {law['tokens']:,} tok, seeds {seeds} "
            f"({'+'.join(law.get('parts', []))}): {law_text(law['unit'], law)}")


def part_rows(record: dict[str, Any]) -> list[dict[str, str]]:
    """One row per part: cells by status, wall time, laws."""
    out = []
    for name, entry in record["parts"].items():
        counts = ", ".join(f"{n} {s}" for s, n in sorted(entry.get("status_counts", {}).items()))
        wall = entry.get("wall_s_total")
        cells = sum(v for k, v in entry.get("compute_s", {}).items()
                    if k != "teacher pretraining")
        out.append({"part": name, "cells": counts or "none",
                    "wall": "-" if wall is None else f"{wall / 3600:.2f} h",
                    "compute": f"{cells / 3600:.2f} h",
                    "laws": [law_text(u, law) for u, law in entry.get("laws", {}).items()]})
    return out


def _totals(record: dict[str, Any]) -> str:
    done = sum(e.get("status_counts", {}).get("done", 0) for e in record["parts"].values())
    wall = sum(e.get("wall_s_total", 0.0) or 0.0 for e in record["parts"].values())
    c = record.get("compute_s", {})
    return (f"{done} cells done; compute {c.get('cells', 0) / 3600:.2f} worker-hours in cells "
            f"and students + {c.get('teacher pretraining', 0) / 3600:.2f} in teacher "
            f"pretraining (each family once); driver wall time of completed part runs "
            f"{wall / 3600:.2f} h (2 workers overlap)")


def summary_markdown(record: dict[str, Any], findings: dict[str, list[dict[str, Any]]]) -> str:
    """``summary.md``: parts, laws, H1-H3 per setting, optimum vs budget, the control."""
    syn = record.get("synthesis", {})
    lines = ["# capgap study — generated summary", "",
             "Written by `capgap study` from the parts' databases; do not edit by hand. "
             f"The paper's ratio is ~{PAPER_RATIO}x. {syn.get('rule', '')}.", "",
             f"Totals: {_totals(record)}.", "", "## Parts", "",
             "| part | cells | compute | wall | laws (total and non-embedding parameters) |",
             "|---|---|---|---|---|"]
    for r in part_rows(record):
        lines.append(f"| {r['part']} | {r['cells']} | {r['compute']} | {r['wall']} | "
                     f"{'<br>'.join(r['laws'])} |")
    pooled = syn.get("laws", [])
    if pooled:
        lines += ["", "## The law per budget, pooled over parts", "",
                  "Every own-pruned cell of the paper's setting at that budget, whichever part "
                  "ran it (files under `laws/`).", ""]
        lines += [f"- {pooled_line(law)}" for law in pooled]
    budget = syn.get("budget", [])
    if budget:
        p = syn["primary"]
        lines += ["", f"## How the optimum moves with the budget ({p['family']}, "
                      f"{p['objective']}, own-pruned students)", "",
                  "![optimum vs budget](optimum_vs_budget.png)", "", "```"]
        lines += [optimum_line(g) for g in budget] + ["```"]
    control = syn.get("control", [])
    if control:
        lines += ["", "## Same-init control", "",
                  "One student initialisation distilled from every teacher, beside the paper's "
                  "students pruned from their own teachers (same size, budget, seeds). Gains "
                  "are over the no-teacher baseline of the same initialisation.", "", "```"]
        for c in control:
            lines += control_line(c)
        lines.append("```")
    other = [g for g in syn.get("optima", []) if g not in budget]
    if other:
        lines += ["", "## Every other group (objectives, families, inits, controls)", "", "```"]
        lines += [f"{g['family']} / {g['objective']} / {g['init']} / {g['source']}: "
                  + optimum_line(g) for g in other] + ["```"]
    for name, items in findings.items():
        lines += ["", f"## {name}: H1-H3 per setting", "", "```"]
        lines += [line for f in items for line in findings_lines(f)] + ["```"]
    return "\n".join(lines) + "\n"


def index_html(record: dict[str, Any], findings: dict[str, list[dict[str, Any]]],
               figure: bool) -> str:
    """``index.html``: the parts (linked to their reports) and the synthesis."""
    esc = html.escape
    rows = [f"<tr><td><a href='{esc(r['part'])}/report/index.html'>{esc(r['part'])}</a></td>"
            f"<td>{esc(r['cells'])}</td><td>{esc(r['compute'])}</td><td>{esc(r['wall'])}</td>"
            f"<td>{'<br>'.join(esc(x) for x in r['laws'])}</td></tr>"
            for r in part_rows(record)]
    syn = record.get("synthesis", {})
    body = ["<h1>capgap study</h1>", f"<p>{esc(_totals(record))}. {esc(syn.get('rule', ''))}.</p>",
            "<table border=1><tr><th>part</th><th>cells</th><th>compute</th><th>wall</th>"
            "<th>law</th></tr>",
            *rows, "</table>"]
    if syn.get("laws"):
        body.append("<h2>The law per budget, pooled over parts</h2><pre>" + esc("\n".join(
            pooled_line(law) for law in syn["laws"])) + "</pre>")
    if syn.get("budget"):
        body.append("<h2>How the optimum moves with the budget</h2>")
        if figure:
            body.append("<img src='optimum_vs_budget.png' alt='optimum vs budget'>")
        body.append("<pre>" + esc("\n".join(optimum_line(g) for g in syn["budget"])) + "</pre>")
    if syn.get("control"):
        body.append("<h2>Same-init control</h2><pre>" + esc("\n".join(
            line for c in syn["control"] for line in control_line(c))) + "</pre>")
    for name, items in findings.items():
        text = "\n".join(line for f in items for line in findings_lines(f))
        body.append(f"<h2>{esc(name)}</h2><pre>{esc(text)}</pre>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}td{padding:4px 8px}"
             "img{max-width:100%}pre{font-size:12px;overflow-x:auto}")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>capgap study</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")
