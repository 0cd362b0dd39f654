"""``capgap law fit`` / ``capgap law predict``: thin over :mod:`capgap.law`."""

from __future__ import annotations

import argparse
import json
from functools import partial
from pathlib import Path
from typing import Any

from capgap.errors import CapgapError
from capgap.io import write_json
from capgap.results.defaults import LAW_BOOTSTRAP, LAW_CI, NOISE_FLOOR, SIGNAL
from capgap.units import format_size, parse_size, parse_sizes

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = "Fit the capacity-gap law T* = a·S + b from a sweep; recommend a teacher with it."

EPILOG = """exit status: 0 law fitted / prediction printed; 2 bad input (one-line error);
3 no law fitted (fewer than 3 uncensored student sizes): fit still writes law.json, and
predict prints the teacher range the sweep's T*/S bracket allows instead of a law's T*."""

INSUFFICIENT = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``fit`` and ``predict`` sub-subcommands."""
    parser.epilog = EPILOG
    sub = parser.add_subparsers(dest="law_command", metavar="COMMAND", required=True)
    _add_fit(sub.add_parser("fit", help="fit T* = a·S + b (and T* = k·S) with bootstrap CIs",
                            description="Fit the law from sweep cells or optimal points.",
                            epilog=EPILOG))
    _add_budget(sub.add_parser("budget", help="fit the budget-aware student-loss law "
                               "L_S(N, D, L_T) (Busbridge et al. 2025) with bootstrap CIs",
                               description="Fit L_S(N, D, L_T) from CE-only and distilled cells.",
                               epilog=EPILOG))
    _add_holdout(sub.add_parser("holdout", help="validate the budget-aware law on cells it "
                                "never saw: fit on the rest, predict them (holdout.json)",
                                description="Hold out cells by value (a larger budget, a "
                                "student size), fit the budget-aware law on the others and "
                                "compare its predictions (losses and best teacher) with the "
                                "held-out cells' measurements.", epilog=EPILOG))
    _add_predict(sub.add_parser("predict", help="recommend a teacher size for a student size",
                                description="Recommend T* for a student size from law.json "
                                "(or, when it holds no law, the teacher range its T*/S "
                                "bracket allows).", epilog=EPILOG))
    _add_replay(sub.add_parser("adaptive-replay", help="replay the adaptive sweep's choices "
                               "on a finished grid: cells it needed for the same best teachers",
                               description="Simulate the adaptive selection (sweep option "
                               "adaptive.enabled) on a finished full grid's own results and "
                               "compare its best teacher per student size with the grid's."))


def _add_fit(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", help="sweep folder (results.sqlite), cells CSV/JSONL "
                   "(student_params, teacher_params, metric[, seed, student_size, alpha, "
                   "status, censored]) or points CSV (student_params, teacher_params)")
    p.add_argument("--out", help="write the law here (JSON), e.g. law.json")
    p.add_argument("--plot", help="also write a figure (.png, .pdf or .svg)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep only cells whose column KEY equals VALUE (repeatable)")
    p.add_argument("--size", choices=["total", "non_embedding"], default="total",
                   help="size unit: total parameters (default) or non-embedding (*_params_ne)")
    p.add_argument("--metric", help="metric column (default: metric, else val_loss)")
    p.add_argument("--higher-is-better", action="store_true",
                   help="the metric is a score, not a loss")
    p.add_argument("--optimum", choices=["argmin", "quadratic"], default="argmin",
                   help="best teacher fitted per size: the best teacher run (default) or the "
                   "vertex of a quadratic in log teacher size")
    p.add_argument("--bootstrap", type=int, default=LAW_BOOTSTRAP, metavar="N",
                   help=f"bootstrap resamples (default {LAW_BOOTSTRAP}, as a sweep's own law)")
    p.add_argument("--ci", type=float, default=LAW_CI, help=f"interval level (default {LAW_CI})")
    p.add_argument("--ci-method", choices=["auto", "seeds+sizes", "seeds", "sizes"],
                   default="auto", help="what the bootstrap resamples (default: seeds and "
                   "sizes when every cell group has >= 2 seeds, else sizes)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    p.add_argument("--tie-floor", type=float, default=NOISE_FLOOR, metavar="X",
                   help="smallest noise, in metric units, for the T*/S bracket: teachers "
                   f"within 3 x max(seed sd, X) of the best count as tied (default "
                   f"{NOISE_FLOOR}, as a sweep's own law)")


def _add_budget(p: argparse.ArgumentParser, many: bool = False) -> None:
    p.add_argument("source", nargs="+" if many else None,
                   help="sweep folder (results.sqlite) or cells CSV/JSONL with "
                   "student_params, tokens, val_loss, alpha and teacher (or teacher_loss); "
                   "teacher_params and pruned_from, where present, give each pruned "
                   "student's compression (the law's pruning-damage term)"
                   + (" (several: their cells are pooled)" if many else ""))
    p.add_argument("--teacher-loss", action="append", default=[], metavar="NAME=LOSS",
                   help="a teacher's held-out loss (nats/token); repeat per teacher "
                   "(default: the teachers' regime.json, see --teachers)")
    p.add_argument("--teachers", metavar="DIR", help="a family pretrained by capgap pretrain "
                   "(its regime.json gives each teacher's loss; default: SOURCE/teachers)")
    p.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                   help="keep only cells with KEY == VALUE (repeatable)")
    p.add_argument("--bootstrap", type=int, default=200, metavar="N",
                   help="bootstrap refits over resampled cells (default 200)")
    p.add_argument("--seed", type=int, default=0, help="bootstrap random seed (default 0)")
    p.add_argument("--damage", choices=["auto", "on", "off"], default="auto",
                   help="the pruning-damage term: auto fits it when the CE-only cells span "
                   ">= 3 compression ratios (default auto)")
    if not many:
        p.add_argument("--out", help="write the law here (JSON), e.g. budget_law.json")


def _add_holdout(p: argparse.ArgumentParser) -> None:
    _add_budget(p, many=True)
    p.add_argument("--hold-out", action="append", default=[], metavar="KEY=V[,V...]",
                   required=True, help="hold out the cells whose column KEY has one of these "
                   "values, e.g. tokens=4e6 or student_target=4e5 (repeatable: a cell "
                   "matching any is held out)")
    p.add_argument("--out", default="holdout.json", help="the record (default holdout.json)")
    p.add_argument("--law-out", help="also write the law fitted on the kept cells (JSON)")


def _add_predict(p: argparse.ArgumentParser) -> None:
    p.add_argument("--law", help="law.json written by capgap law fit, or a budget law from "
                   "capgap law budget (default: the paper's published T* = 2.5·S in total "
                   "parameters, which has no interval)")
    p.add_argument("--student-params", required=True, metavar="N",
                   help="student size in the law's unit, e.g. 3B, 350M, 1.2e9")
    p.add_argument("--tokens", metavar="D", help="distillation tokens (needs a budget law)")
    p.add_argument("--teachers", metavar="A,B,C",
                   help="available teacher sizes; prints the closest in log-size and a ranking "
                   "(with a budget law: NAME=LOSS[@PARAMS] pairs, a sweep folder (its "
                   "teachers as scored on its students' text) or a pretrained family's folder "
                   "(regime.json); default the law's own teachers)")
    p.add_argument("--init", choices=["pruned", "scratch"], default="pruned",
                   help="with a budget law that has the pruning-damage term: the student is "
                   "pruned from each teacher (default) or trained from scratch")
    p.add_argument("--json", action="store_true", help="print the recommendation as JSON")


def _add_replay(p: argparse.ArgumentParser) -> None:
    p.add_argument("sources", nargs="+", metavar="DIR",
                   help="finished sweep folder(s) (results.sqlite); several are pooled, e.g. "
                   "the parts holding different seeds of one grid")
    p.add_argument("--out", help="write the replay here (JSON; default "
                   "DIR/adaptive_replay.json of the first DIR)")
    p.add_argument("--start", type=int, default=3,
                   help="teachers per student size in the first round (default 3)")
    p.add_argument("--signal", type=float, default=SIGNAL,
                   help=f"drop a teacher beyond this x noise of the best (default {SIGNAL:g})")
    p.add_argument("--noise-floor", type=float, default=NOISE_FLOOR, metavar="X",
                   help=f"smallest seed noise in nats (default {NOISE_FLOOR})")


def run(args: argparse.Namespace) -> int:
    """Dispatch to fit, budget, holdout, predict or adaptive-replay."""
    return {"fit": _fit, "budget": _budget, "holdout": _holdout, "predict": _predict,
            "adaptive-replay": _replay}[args.law_command](args)


# ---------------------------------------------------------------- adaptive replay


def _replay(args: argparse.Namespace) -> int:
    from capgap import config
    from capgap.results.adaptive import AdaptiveConfig, replay_families, teacher_families
    from capgap.results.store import read_rows

    cfg = config.checked(AdaptiveConfig(True, args.start, args.signal, args.noise_floor))
    rows = {d: read_rows(d) for d in args.sources}
    families = {"+".join(Path(d).name or d for d in group): [r for d in group for r in rows[d]]
                for group in teacher_families(rows)}
    result = {"sources": args.sources, **replay_families(families, cfg)}
    out = Path(args.out) if args.out else Path(args.sources[0]) / "adaptive_replay.json"
    write_json(out, result)
    print(summarise_replay(result))
    print(f"wrote {out}")
    return 0


_COST_NAMES = {"distill_s": "cell seconds", "total_flops": "FLOPs"}


def summarise_replay(r: dict[str, Any]) -> str:
    """What the adaptive selection needed, overall and per student size."""
    cells, (same, n), (tied, _) = r["cells"], r["same_best"], r["tied_best"]
    cost = ", ".join(f"{_COST_NAMES.get(k, k)} {v['fraction']:.0%}" for k, v in r["cost"].items())
    lines = [f"adaptive replay of {', '.join(r['sources'])}: {cells['used']} of "
             f"{cells['total']} cells ({cells['fraction']:.0%}; {cost}) in {r['rounds']} "
             f"rounds; same best teacher as the full grid for {same} of {n} student sizes "
             f"({tied} of {n} within {r['rule']['signal']:g} x noise)"]
    for name, f in r.get("families", {}).items():
        lines.append(f"  {name}: {f['cells']['used']} of {f['cells']['total']} cells, same "
                     f"best teacher for {f['same_best'][0]} of {f['same_best'][1]} sizes")
    for c in r["curves"]:
        lines.append(f"  {c['family'] + ': ' if 'family' in c else ''}"
                     f"S {format_size(c['student_target'])} {c['objective']} "
                     f"{c['allocation']} {c['init']} {c['tokens']:,} tok: best "
                     f"{c['adaptive_best']} (grid {c['full_best']}), ran "
                     f"{', '.join(c['run'])}: {c['cells'][0]} of {c['cells'][1]} cells")
    return "\n".join(lines)


# ---------------------------------------------------------------- fit


def _fit(args: argparse.Namespace) -> int:
    from capgap.law import fit_source, plot_law
    from capgap.law.plot import FORMATS

    if args.plot and Path(args.plot).suffix.lower().lstrip(".") not in FORMATS:
        raise CapgapError(f"--plot {args.plot}: format must be one of {', '.join(FORMATS)}")
    law = fit_source(args.source, where=parse_where(args.where), metric=args.metric,
                     higher_is_better=args.higher_is_better, size=args.size,
                     optimum=args.optimum, n_boot=args.bootstrap, ci=args.ci,
                     ci_method=args.ci_method, seed=args.seed, tie_floor=args.tie_floor)
    print(summarise_fit(law))
    if args.plot:
        plot_law(law, args.plot)
        print(f"wrote {args.plot}")
    if args.out:
        write_json(args.out, law)
        print(f"wrote {args.out}")
    return 0 if law["status"] == "ok" else INSUFFICIENT


def parse_where(items: list[str]) -> dict[str, str]:
    """``["objective=soft_ce", "tokens=2e6"]`` -> dict; malformed or repeated keys are errors."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise CapgapError(f"--where {item!r}: expected KEY=VALUE, e.g. objective=soft_ce")
        if key in out:
            raise CapgapError(f"--where {key} given twice")
        out[key] = value.strip()
    return out


def summarise_fit(law: dict[str, Any]) -> str:
    """The law in a few human lines: both fits with intervals, LOO error, per-size table."""
    from capgap.law.bracket import bracket_text
    from capgap.law.cells import AS_GIVEN

    si = law["size_unit"] != AS_GIVEN
    fmt = partial(format_size, si=si)
    lines = [_fit_header(law)]
    if law["status"] == "ok":
        pct = f"{law['ci_level']:.0%}"
        lines += [
            f"  T* = {law['slope']:.4g}·S {'+' if law['intercept'] >= 0 else '-'} "
            f"{fmt(abs(law['intercept']))}   R² {_num(law['r2'], '.4f')}   "
            f"{pct} CI slope {_interval(law['slope_ci'], '.3g')}, "
            f"intercept {_interval(law['intercept_ci'], fmt)}",
            f"  T* = {law['ratio']:.4g}·S   R² {_num(law['ratio_r2'], '.4f')} (centred)   "
            f"{pct} CI {_interval(law['ratio_ci'], '.3g')}   "
            f"[{law['ci_method']}, {law['n_boot_valid']}/{law['n_boot']} resamples]",
            f"  leave-one-size-out mean |rel. error|: linear {_num(law['loo']['linear_mare'], '.1%')}"
            f", proportional {_num(law['loo']['ratio_mare'], '.1%')}",
        ]
    else:
        lines.append(f"  no law fitted: {law['reason']}")
    if law.get("bracket"):
        lines.append(f"  bracket (grid bound, any size): {bracket_text(law['bracket'])}")
    lines += _size_table(law, fmt)
    lines += [f"warning: {w}" for w in law["warnings"]]
    return "\n".join(lines)


def _fit_header(law: dict[str, Any]) -> str:
    metric = law.get("metric")
    what = "" if metric is None else (
        f", metric '{metric['name']}' ({'higher' if metric['higher_is_better'] else 'lower'} "
        f"is better), optimum {law['optimum']}")
    return (f"capgap law: {law['n_points']} point(s) in the fit "
            f"({law['size_unit']}{what})")


_EDGE = {"low": "at the smallest teacher", "high": "at the largest teacher",
         "both": "single teacher", None: "marked in the source"}


def _size_table(law: dict[str, Any], fmt: Any) -> list[str]:
    """One row per student size: its best teacher, T/S, the vertex, T*'s interval, fate."""
    rows = [f"  {'student':>9} {'best T':>9} {'T/S':>6} {'vertex':>9} {'T* CI':>21}  note"]
    for s in law["sizes"]:
        t = s.get("optimum")
        ratio = f"{t / s['student_params']:.2f}" if t else "n/a"
        note = "" if s["used_in_fit"] else (
            f"censored ({_EDGE[s.get('censored_edge')]}), left out" if s["censored"]
            else "no continuous optimum, left out")
        ci = _interval(s.get("t_opt_ci"), fmt) if s.get("t_opt_ci") else "n/a"
        rows.append(f"  {fmt(s['student_params']):>9} {fmt(s.get('argmin', t)):>9} {ratio:>6} "
                    f"{fmt(s.get('continuous_optimum')):>9} {ci:>21}  {note}")
    return rows


def _interval(ci: list[float] | None, fmt: Any) -> str:
    if ci is None:
        return "n/a"
    f = (lambda x: format(x, fmt)) if isinstance(fmt, str) else fmt
    return f"[{f(ci[0])}, {f(ci[1])}]"


def _num(x: float | None, spec: str) -> str:
    return "n/a" if x is None else format(x, spec)


# ---------------------------------------------------------------- predict


def _budget_cells(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """The cells (``--where`` applied; ``objective=X`` keeps the no-teacher baselines) and the
    teachers' losses a budget-law command uses."""
    from capgap.law.budget import is_baseline, measured_losses
    from capgap.law.cells import matches, read_table
    from capgap.results.regime import teacher_losses

    sources = args.source if isinstance(args.source, list) else [args.source]
    given = parse_losses(args.teacher_loss, "--teacher-loss")
    found: dict[str, float] = {}
    if args.teachers or not given:
        for src in [args.teachers] if args.teachers else sources:
            try:
                regime = teacher_losses(src)[0]
            except CapgapError:
                if args.teachers:
                    raise
                continue
            clash = sorted(t for t in regime if t in found and found[t] != regime[t])
            if clash:
                raise CapgapError(f"{src}: its teacher {clash[0]} is not the one of that name in "
                                  "another source (two families?): fit one family at a time")
            found |= regime
    where = parse_where(args.where)
    records = [dict(r) for src in sources for r in read_table(src).rows
               if all(matches(r.get(k), v) for k, v in where.items()
                      if not (k == "objective" and is_baseline(r)))]  # baselines have no objective
    return records, found | measured_losses(records) | given


def _damage(args: argparse.Namespace) -> bool | None:
    return {"auto": None, "on": True, "off": False}[args.damage]


def _budget(args: argparse.Namespace) -> int:
    from capgap.law.budget import fit_budget_law, rows_from

    records, losses = _budget_cells(args)
    law = fit_budget_law(rows_from(records, losses), bootstrap=args.bootstrap, seed=args.seed,
                         damage=_damage(args))
    print(summarise_budget(law))
    if args.out:
        write_json(args.out, law.to_dict())
        print(f"wrote {args.out}")
    return 0


def parse_hold_out(items: list[str]) -> dict[str, list[int | float | str]]:
    """``["tokens=4e6", "student_target=4e5,5e5"]`` -> {column: values}."""
    out: dict[str, list[int | float | str]] = {}
    for item in items:
        key, sep, value = (part.strip() for part in item.partition("="))
        values = [v.strip() for v in value.split(",") if v.strip()]
        if not sep or not key or not values:
            raise CapgapError(f"--hold-out {item!r}: expected KEY=VALUE[,VALUE...], e.g. tokens=4e6")
        out.setdefault(key, []).extend(_value(v) for v in values)
    return out


def _value(text: str) -> int | float | str:
    """A held-out value: a number where the text spells one (``4M``, ``2e6``), else the text."""
    try:
        x = parse_size(text)
    except CapgapError:
        return text
    return int(x) if float(x).is_integer() else x


def _holdout(args: argparse.Namespace) -> int:
    from capgap.law.holdout import holdout

    records, losses = _budget_cells(args)
    record, law = holdout(records, losses, parse_hold_out(args.hold_out),
                          bootstrap=args.bootstrap, seed=args.seed, damage=_damage(args))
    print(summarise_holdout(record))
    write_json(args.out, record)
    print(f"wrote {args.out}")
    if args.law_out:
        write_json(args.law_out, law.to_dict())
        print(f"wrote {args.law_out}")
    return 0


def summarise_holdout(rec: dict[str, Any]) -> str:
    """The held-out figures in a few lines, one per held-out slice."""
    from capgap.law.holdout import MIN_SEEDS, slice_line

    noise = rec["seed_noise_nats"]
    lines = [f"fitted on {rec['fit_cells']} cells, predicted {rec['held_out_cells']} held out "
             f"({', '.join(f'{k} in {v}' for k, v in rec['hold_out'].items())}): "
             f"mae {_num(rec['mae_nats'], '.4f')} nats (distilled "
             f"{_num(rec['mae_distilled_nats'], '.4f')}, baselines "
             f"{_num(rec['mae_baseline_nats'], '.4f')}), seed noise "
             + (f"{noise:.4f} nats ({rec['seed_noise_cells']} cells)" if noise is not None
                else f"unmeasured (no cell has {MIN_SEEDS} seeds)"),
             f"best teacher predicted for {_num(rec['argmin_agreement'], '.0%')} of held-out "
             f"slices ({_num(rec['argmin_within_noise'], '.0%')} within noise)"]
    return "\n".join(lines + ["  " + slice_line(s) for s in rec["slices"]])


def parse_losses(items: list[str], flag: str) -> dict[str, float]:
    """``NAME=LOSS`` items -> {name: loss}; a one-line error naming ``flag`` otherwise."""
    out = {}
    for item in items:
        name, _, value = (part.strip() for part in item.partition("="))
        try:
            out[name] = float(value)
        except ValueError:
            name = ""
        if not name:
            raise CapgapError(f"{flag} {item!r}: expected NAME=LOSS, e.g. T3=4.21")
    return out


def summarise_budget(law: Any) -> str:
    """The fitted constants with their intervals and the fit's residuals."""
    lines = [f"budget-aware law on {law.fit['cells']} cells ({law.fit['baseline_cells']} CE-only): "
             f"rmse {law.fit['rmse_nats']:.4f} nats, worst {law.fit['max_abs_nats']:.4f}"]
    for name, value in law.supervised.items() | law.distilled.items():
        ci = law.ci.get(name)
        lines.append(f"  {name:>5} = {value:.4g}" + (f"  [{ci[0]:.4g}, {ci[1]:.4g}]" if ci else ""))
    if law.fit["at_bounds"]:
        lines.append(f"  not determined by these data (at a search bound): {', '.join(law.fit['at_bounds'])}")
    return "\n".join(lines)


def _predict_budget(args: argparse.Namespace, data: dict[str, Any]) -> int:
    from capgap.law.budget import BudgetLaw

    law = BudgetLaw.from_dict(data)
    teachers, params = budget_teachers(args.teachers) if args.teachers else (None, None)
    if not args.tokens:
        raise CapgapError("a budget law predicts for a token budget: add --tokens D")
    rec = law.best_teacher(parse_size(args.student_params), parse_size(args.tokens), teachers,
                           params=params, init=args.init)
    if args.json:
        print(json.dumps(rec, indent=2))
        return 0
    n = rec["student_params"]
    lines = [f"student {format_size(n)} params, {format_size(rec['tokens'])} tokens: "
             f"best teacher {rec['best']} (no teacher: {rec['baseline']:.4f} nats)"]
    sizes = rec.get("teacher_params", {})
    for name, loss in sorted(rec["losses"].items(), key=lambda kv: kv[1]):
        ci = rec.get("loss_ci", {}).get(name)
        share = rec.get("best_share", {}).get(name)
        size = f" ({format_size(sizes[name])}, {sizes[name] / n:.2f}x)" if name in sizes else ""
        lines.append(f"  {name + size:>22}: {loss:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
                     + (f"  best in {share:.0%} of resamples" if share is not None else ""))
    print("\n".join(lines))
    return 0


def budget_teachers(text: str) -> tuple[dict[str, float], dict[str, float]]:
    """``--teachers`` of a budget law: a sweep folder (its teachers as scored on the students'
    text), a pretrained family's folder (its regime.json) or ``NAME=LOSS[@PARAMS]`` pairs;
    (losses, sizes)."""
    from capgap.results.regime import measured_teachers, teacher_losses

    if Path(text).exists():
        return measured_teachers(text) or teacher_losses(text)
    losses, params = {}, {}
    for item in text.split(","):
        pair, _, size = item.partition("@")
        ((name, loss),) = parse_losses([pair], "--teachers").items()
        losses[name] = loss
        if size:
            params[name] = parse_size(size)
    return losses, params


def _predict(args: argparse.Namespace) -> int:
    from capgap.law import predict
    from capgap.law.budget import FORMATS
    from capgap.law.predict import check_law, paper_law, predict_range, read_law

    law = read_law(args.law) if args.law else paper_law()
    if law.get("format") in FORMATS:
        return _predict_budget(args, law)
    if args.tokens:
        raise CapgapError("--tokens needs a budget law (capgap law budget ... --out F; --law F)")
    n = parse_size(args.student_params)
    teachers = parse_sizes(args.teachers) if args.teachers else None
    if args.law and law.get("status", "ok") != "ok":
        law.setdefault("source", args.law)
        ranged = predict_range(law, n, teachers)
        print(json.dumps(ranged.to_dict(), indent=2) if args.json else summarise_range(ranged))
        return INSUFFICIENT
    rec = predict(check_law(law, args.law or "law"), n, teachers)
    print(json.dumps(rec.to_dict(), indent=2) if args.json else summarise_prediction(rec))
    return 0


def summarise_prediction(rec: Any) -> str:
    """The recommendation in a few human lines."""
    from capgap.law.cells import AS_GIVEN

    si = rec.size_unit != AS_GIVEN
    fmt = partial(format_size, si=si)
    pct = f"{rec.ci_level:.0%}"
    lines = [
        f"student {fmt(rec.student_params)} ({rec.size_unit}), law from {rec.source}:",
        f"  linear law       T* = a·N + b = {fmt(rec.teacher_linear)}   "
        f"{pct} CI {_interval(rec.teacher_linear_ci, fmt)}",
        f"  proportional law T* = k·N     = {fmt(rec.teacher_ratio)}   "
        f"{pct} CI {_interval(rec.teacher_ratio_ci, fmt)}",
    ]
    if rec.ranking:
        lines.append(f"  closest available teacher: {fmt(rec.closest_teacher)} "
                     f"(to the {rec.basis} law's {fmt(rec.target)})")
        lines += [f"    {i}. {fmt(t)}  |ln(T/T*)| = {d:.3f}"
                  for i, (t, d) in enumerate(rec.ranking, 1)]
    lines += [f"warning: {w}" for w in rec.warnings]
    return "\n".join(lines)


def summarise_range(rec: Any) -> str:
    """The teacher range of a law-less sweep in a few human lines."""
    from capgap.law.cells import AS_GIVEN

    fmt = partial(format_size, si=rec.size_unit != AS_GIVEN)
    hi = "unbounded" if rec.teacher_hi is None else fmt(rec.teacher_hi)
    ratio_hi = "inf" if rec.ratio_hi is None else f"{rec.ratio_hi:.2f}"
    lines = [f"student {fmt(rec.student_params)} ({rec.size_unit}), no law in {rec.source}:",
             f"  T* lies in ({fmt(rec.teacher_lo)}, {hi}): T*/S in ({rec.ratio_lo:.2f}, "
             f"{ratio_hi})x, the bound the sweep's teacher grid sets"]
    if rec.reference_inside is not None:
        lines.append(f"  the paper's {rec.reference:g}x is "
                     f"{'inside' if rec.reference_inside else 'outside'} it")
    if rec.ranking:
        inside = ", ".join(fmt(t) for t in rec.inside) or "none"
        lines.append(f"  available teachers inside the range: {inside}")
        lines += [f"    {i}. {fmt(t)}  " + ("inside" if d == 0 else f"|ln| {d:.3f} outside")
                  for i, (t, d) in enumerate(rec.ranking, 1)]
    lines += [f"warning: {w}" for w in rec.warnings]
    return "\n".join(lines)
