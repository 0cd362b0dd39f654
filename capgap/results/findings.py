"""The paper's hypotheses, answered from a sweep's rows and its law — in data, not prose.

For one setting (objective, allocation, init, budget) of a sweep:

* **H1, the gap matters:** for each student size, how far the distilled loss moves across
  teachers (max − min of the seed means) against the seed noise (the largest standard
  deviation over seeds, or ``noise_floor`` with one seed), and how the distillation gain over
  the α = 1 baseline moves with teacher size.
* **H2, an optimal teacher inside the range:** per size, the best teacher and whether it is
  censored at the low or high edge of the teachers tried.
* **H3, a consistent ratio:** T*/S of the uncensored sizes and their spread, plus the fitted
  ratio and line with their intervals (from ``law.json``) against the paper's ~2.5.

Verdicts are deliberately plain strings ("yes", "no", "not testable"), each with the numbers
behind it, so a report or a README can quote them without re-deriving anything; the report
renders them (:func:`capgap.report.findings.findings_lines`).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from capgap.results.defaults import NOISE_FLOOR, PAPER_RATIO, SIGNAL
from capgap.results.optimum import exceeds_noise, seed_noise, shared_seeds_by
from capgap.results.pairing import Paired, paired_rows
from capgap.results.rows import CellRow, as_rows


def setting_rows(rows: Iterable[Mapping[str, Any]], where: Mapping[str, Any]) -> list[CellRow]:
    """Finished rows of one setting (baselines of the same init, budget and allocation kept)."""
    keys = ("allocation", "init", "tokens")
    return [r for r in as_rows(rows) if r.status == "done"
            and all(str(r.get(k)) == str(where[k]) for k in keys if k in where)
            and (not r.distilled or r.objective == where.get("objective", r.objective))]


def findings(rows: Iterable[Mapping[str, Any]], law: dict[str, Any] | None,
             where: dict[str, Any], noise_floor: float = NOISE_FLOOR) -> dict[str, Any]:
    """H1, H2, H3 and the law for the setting ``where`` (see the module docstring)."""
    paired = paired_rows(setting_rows(rows, where))
    return {"where": where, "h1": _h1(paired, noise_floor), "h2": _h2(law),
            "h3": _h3(law), "law": law_summary(law)}


def seed_sd(values: list[float]) -> float | None:
    """Sample standard deviation over seeds; None with a single one."""
    return statistics.stdev(values) if len(values) > 1 else None


def _by_size(paired: list[Paired]) -> dict[int, dict[int, list[Paired]]]:
    """Cells per size and teacher, on the seeds all of the size's teachers share."""
    out: dict[int, dict[int, list[Paired]]] = {}
    for size, cells in shared_seeds_by(paired, lambda p: p.row.student_target,
                                       lambda p: p.row.teacher_params,
                                       lambda p: p.row.seed).items():
        for p in cells:
            out.setdefault(size, {}).setdefault(p.row.teacher_params, []).append(p)
    return out


def _h1(paired: list[Paired], noise_floor: float) -> dict[str, Any]:
    sizes = []
    for size, by_t in sorted(_by_size(paired).items()):
        teachers = sorted(by_t)
        means = [statistics.fmean(p.row.val_loss for p in by_t[t]) for t in teachers]
        sds = [seed_sd([p.row.val_loss for p in by_t[t]]) for t in teachers]
        gains = [statistics.fmean(p.gain for p in by_t[t] if p.gain is not None)
                 if any(p.gain is not None for p in by_t[t]) else None for t in teachers]
        noise = seed_noise(sds, noise_floor).value
        spread = max(means) - min(means) if len(means) > 1 else 0.0
        known = [g for g in gains if g is not None]
        gain_spread = max(known) - min(known) if len(known) > 1 else None
        sizes.append({"student": size, "teachers": teachers, "loss": means,
                      "seed_sd": [0.0 if sd is None else sd for sd in sds],
                      "gain": gains, "spread": spread, "gain_spread": gain_spread,
                      "noise": noise,
                      "gap_matters": len(means) > 1 and exceeds_noise(spread, noise),
                      "teacher_effect": gain_spread is not None
                      and exceeds_noise(gain_spread, noise)})
    testable = [s for s in sizes if len(s["teachers"]) > 1]
    verdict = ("not testable" if not testable else
               "yes" if all(s["gap_matters"] for s in testable) else
               "partly" if any(s["gap_matters"] for s in testable) else "no")
    return {"verdict": verdict, "sizes": sizes,
            "rule": f"loss spread across teachers > {SIGNAL:g} x seed noise "
                    f"(noise floor {noise_floor:g} nats)",
            "caveat": "with students pruned from their own teachers the loss spread mixes "
                      "pruning damage with the teacher's effect; the gain over the baseline "
                      "(gain_spread, teacher_effect) and the same-init control isolate the "
                      "teacher"}


def _h2(law: dict[str, Any] | None) -> dict[str, Any]:
    """Interior: the best teacher (seed mean) is neither the smallest nor the largest tried.
    Resolved: also, neither edge teacher is tied with it (within the bracket's signal x
    noise), so the seeds, not just the means, put the optimum inside."""
    if not law or not law.get("sizes"):
        return {"verdict": "not testable", "sizes": []}
    tied = {b["student_params"]: b["tied"] for b in (law.get("bracket") or {}).get("sizes", [])}
    sizes = []
    for s in law["sizes"]:
        censored = bool(s.get("censored"))
        ties = tied.get(s["student_params"])
        edges = (s["teachers"][0], s["teachers"][-1]) if s.get("teachers") else ()
        sizes.append({"student": s["student_params"], "best_teacher": s.get("optimum"),
                      "ratio": s.get("ratio"), "censored": censored,
                      "edge": s.get("censored_edge"),
                      "resolved": None if ties is None else
                      not censored and not any(t in ties for t in edges)})
    interior = sum(not s["censored"] for s in sizes)
    verdict = "yes" if interior == len(sizes) else "partly" if interior else "no"
    return {"verdict": verdict, "interior": interior,
            "resolved": sum(bool(s["resolved"]) for s in sizes), "sizes": sizes}


def _h3(law: dict[str, Any] | None) -> dict[str, Any]:
    """From the interior optima when two or more sizes have one; otherwise from the bracket
    (:mod:`capgap.law.bracket`), which censored sizes also bound."""
    ratios = [s["ratio"] for s in (law or {}).get("sizes", [])
              if not s.get("censored") and s.get("ratio") is not None]
    bracket = (law or {}).get("bracket")
    if len(ratios) < 2:
        if bracket and bracket.get("consistent") is not None:
            verdict = "not rejected" if bracket["consistent"] else "no"
            return {"verdict": verdict, "ratios": ratios, "bracket": bracket,
                    "why": "fewer than two interior optima; from the brackets: "
                           + ("some T*/S fits every size (bracket below)" if bracket["consistent"]
                              else "no single ratio fits every size")}
        return {"verdict": "not testable", "ratios": ratios, "bracket": bracket,
                "why": "fewer than two student sizes with an optimum inside the teacher range"}
    mean = statistics.fmean(ratios)
    cv = statistics.stdev(ratios) / mean
    ci = (law or {}).get("ratio_ci")
    return {"verdict": "yes" if cv < 0.25 else "no", "ratios": ratios, "mean": mean, "cv": cv,
            "bracket": bracket, "rule": "coefficient of variation of T*/S across sizes < 0.25",
            "paper_ratio_in_ci": None if not ci else bool(ci[0] <= PAPER_RATIO <= ci[1])}


def hypotheses(f: dict[str, Any]) -> dict[str, Any]:
    """The verdicts of :func:`findings` in a line's worth of keys: H1 and how many sizes show
    the teacher's own effect (of those with gains), H2 and its interior sizes, H3."""
    sizes = f["h1"]["sizes"]
    known = [s for s in sizes if s["gain_spread"] is not None]
    return {"h1": f["h1"]["verdict"],
            "teacher_effect": [sum(s["teacher_effect"] for s in known), len(known)],
            "h2": f["h2"]["verdict"], "interior": [f["h2"].get("interior", 0),
                                                   len(f["h2"]["sizes"])],
            "resolved": f["h2"].get("resolved"),
            "h3": f["h3"]["verdict"]}


def law_summary(law: dict[str, Any] | None) -> dict[str, Any]:
    """The law's headline keys (fit, intervals, status), beside the paper's ratio."""
    if not law:
        return {"status": "missing"}
    keys = ("status", "reason", "slope", "slope_ci", "intercept", "intercept_ci", "r2", "ratio",
            "ratio_ci", "ratio_r2", "n_points", "size_unit", "bracket")
    return {k: law.get(k) for k in keys if k in law} | {"paper_ratio": PAPER_RATIO}
