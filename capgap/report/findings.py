"""The H1-H3 findings (computed by :mod:`capgap.results.findings`) in a few human lines."""

from __future__ import annotations

from typing import Any

from capgap.law.bracket import bracket_text, ratio_text
from capgap.results.defaults import PAPER_RATIO, SIGNAL


def findings_lines(f: dict[str, Any]) -> list[str]:
    """A few human lines for a report."""
    w = f["where"]
    head = (("" if f.get("family") is None else f"{f['family']} / ")
            + f"{w.get('objective')} / {w.get('allocation')} / {w.get('init')} / "
            f"{int(w.get('tokens', 0)):,} tok")
    lines = [head, f"  H1 gap affects quality: {f['h1']['verdict']} ({f['h1'].get('rule', '')})"]
    for s in f["h1"]["sizes"]:
        gains = ("no baselines in this part" if all(g is None for g in s["gain"]) else
                 ", ".join("-" if g is None else f"{g:+.3f}" for g in s["gain"]))
        effect = ("" if s["gain_spread"] is None else
                  f" (spread {s['gain_spread']:.3f}: teacher's own effect "
                  f"{'above' if s['teacher_effect'] else 'within'} {SIGNAL:g} x noise)")
        lines.append(f"    S {s['student'] / 1e6:.3g}M: loss spread {s['spread']:.3f} vs noise "
                     f"{s['noise']:.4f}; gain over baseline by teacher size: {gains}{effect}")
    h2 = f["h2"]
    lines.append(f"  H2 interior optimum: {h2['verdict']}"
                 + (f" ({h2['interior']} of {len(h2['sizes'])} sizes" if h2["sizes"] else "")
                 + (f"; {h2.get('resolved', 0)} beyond {SIGNAL:g} x noise of both edge "
                    "teachers" if h2.get("interior") else "") + (")" if h2["sizes"] else ""))
    for s in h2["sizes"]:
        where = (f"censored at the {s['edge']} edge" if s["censored"] else "inside the range"
                 + ("" if s.get("resolved") is None else
                    ", beyond noise" if s["resolved"] else ", but an edge teacher is tied"))
        best = ("none" if s["best_teacher"] is None else
                f"T {s['best_teacher'] / 1e6:.3g}M ({s['ratio']:.2f}x)")
        lines.append(f"    S {s['student'] / 1e6:.3g}M: best {best}, {where}")
    h3 = f["h3"]
    lines.append(f"  H3 consistent ratio: {h3['verdict']}"
                 + (f" (T*/S {', '.join(f'{r:.2f}' for r in h3['ratios'])}; cv {h3['cv']:.2f})"
                    if "cv" in h3 else f" ({h3.get('why', '')})"))
    law = f["law"]
    if law.get("bracket"):
        lines.append(f"  bracket: {bracket_text(law['bracket'])}")
    if law.get("status") == "ok":
        lines.append(f"  law: T* = {law['slope']:.3g}·S + {law['intercept']:.3g} (R² {law['r2']:.3f}); "
                     f"{ratio_text(law)} vs the paper's ~{PAPER_RATIO}")
    else:
        lines.append(f"  law: {law.get('status')} — {law.get('reason', '')}")
    return lines
