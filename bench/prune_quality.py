"""Pruning quality on a real checkpoint: expressiveness scores vs random and magnitude pruning.

SmolLM2-135M (``capgap convert smollm2 --out models/smollm2-135m``) is pruned at each sparsity
by three scorers on the *same* units, allocation and kept counts:

* ``expressiveness`` — ``capgap.prune.score`` over ``--calib-tokens`` training tokens;
* ``magnitude``      — ``baseline_scores(model, "magnitude")``: L2 norm of each unit's weights;
* ``random``         — ``baseline_scores(model, "random", seed)``, seeds 0..``--random-seeds``-1.

Opt-in diagnostics for a lost comparison (``--methods``): ``expressiveness+magnitude_hidden`` and
``magnitude+expressiveness_hidden`` swap only the hidden-dim (μ) choice between two scorers.

Fairness (same kept counts): with ``--allocation uniform`` the counts are a pure function of
the target size, so every scorer gets the same ones anyway. With ``global`` they are not: the
cross-layer ranking (and so how many heads/neurons each layer keeps) depends on the scores.
The baselines therefore get the *expressiveness* plan's per-layer counts, via ``prune`` itself:
their scores are replaced, layer by layer, by the expressiveness layer's sorted values placed
in the baseline's own within-layer order (:func:`matched_scores`). The global ranking then sees
the same multiset of values in every layer, so ``prune`` finds the identical per-layer counts
and hidden width, while *which* units are kept follows the baseline. Asserted for every row.

Each row: prune, held-out perplexity on the first ``--eval-bytes`` of the embedded corpus'
validation text (``capgap.evaluate.heldout.evaluate_text``), then a fixed short recovery
distillation from the unpruned model (``capgap.distill.chunked.distill_loss``, alpha 0.5, soft
CE; AdamW and schedule as ``capgap.train.loop.OptimConfig``: lr 3e-4, betas 0.9/0.95, wd 0.1 on
matrices, 1 % warm-up, cosine to 0.1 lr, clip 1.0) on the same training batches in the same
order for every row, then perplexity again. Sparsity 0 is the dense model, whose recovery run is
the control for what recovery training alone does (domain adaptation to the corpus).
The teacher's final hidden states are computed once and replayed to later rows
(:class:`ReplayTeacher`): identical inputs give identical teacher outputs, so this is exact.

Results are rewritten atomically after every row; ``--resume`` skips rows already present.

Cost (SmolLM2-135M, fp32, 2 CPU cores; measured under load at ~50 tok/s forward and ~9.5
tok/s forward+backward, taken as ~110 and ~21 tok/s idle): scoring ~0.034 s per calibration
token, the 42 evaluations ~0.28 s per eval token (10 kB ≈ 2.8k SmolLM2 tokens), the 21
recoveries ~0.77 s per recovery token, plus ~2 min of loading and tokenising. The defaults
(8192 / 10 kB / 2048) come to ~45 min idle; 16384 / 60 kB / 20000 would take ~6 h (run it
in pieces with ``--resume``, or on a GPU with ``--device cuda``).

    python bench/prune_quality.py [--model models/smollm2-135m] [--sparsities 0,0.1,0.2,0.3,0.5]
        [--random-seeds 3] [--calib-tokens 8192] [--eval-bytes 10000] [--recovery-tokens 2048]
        [--allocation global|uniform] [--methods expressiveness,magnitude,random]
        [--out bench/results/prune_quality.json] [--resume | --overwrite]
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch
from torch import nn

from capgap.errors import CapgapError
from capgap.io import write_json

METHODS = ("expressiveness", "magnitude", "random")
# Opt-in diagnostics (--methods): one scorer's heads/neurons with the other's hidden dims, to
# tell whether a gap comes from the width (μ) choice or from the head/neuron choice.
MIXED = {"expressiveness+magnitude_hidden": ("expressiveness", "magnitude"),
         "magnitude+expressiveness_hidden": ("magnitude", "expressiveness")}
CONVERT_HINT = "convert it first: capgap convert smollm2 --out {}"


# --- fairness: same per-layer kept counts for every scorer -----------------------------------


def matched_scores(baseline, reference):  # noqa: ANN001, ANN201 - Scores -> Scores
    """``baseline``'s within-layer order carrying ``reference``'s per-layer score values.

    Row by row (heads (L, G), neurons (L, F)), the reference row's values sorted descending are
    assigned to the baseline's units in the baseline's descending order. Global allocation only
    looks at the values across layers (identical multisets per layer ⇒ identical per-layer
    counts, ties included: ties across layers break by layer, within one by unit) and at the
    order inside each layer (the baseline's). Hidden dims keep the baseline's scores: their
    kept count depends only on the size search, not on μ.
    """
    from capgap.prune import Scores

    def transplant(base: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(ref)  # (L, U)
        order = torch.argsort(base, dim=1, descending=True, stable=True)
        out.scatter_(1, order, torch.sort(ref, dim=1, descending=True, stable=True).values)
        return out

    # built directly, not from_raw: a re-normalisation could perturb float ties across layers
    return Scores(
        heads=transplant(baseline.heads, reference.heads),
        neurons=transplant(baseline.neurons, reference.neurons),
        hidden=baseline.hidden.clone(),
        layers=baseline.layers.clone(),
        raw=dict(baseline.raw),
        meta=dict(baseline.meta) | {"matched_counts_to": "expressiveness"},
    )


def kept_counts(report: dict) -> dict:
    """The per-layer counts of a prune report (what must be equal across scorers)."""
    keys = ("hidden_kept", "layers_kept", "kv_groups_kept_per_layer", "neurons_kept_per_layer")
    return {k: report[k] for k in keys} | {"params_after": report["params_after"]}


def unmatched_counts(model: nn.Module, scores, sparsity: float, allocation: str) -> dict:  # noqa: ANN001
    """Counts ``prune`` would give these scores on their own (allocation search only)."""
    from capgap.models.arch import ParamTable, adapter_for
    from capgap.models.params import count_params
    from capgap.prune.allocate import allocate

    adapter = adapter_for(model)
    table = ParamTable.from_model(model, adapter)
    target = round((1.0 - sparsity) * count_params(model).total)
    alloc = allocate(scores, table, adapter, target=target, allocation=allocation, multiple=1,
                     layers=list(range(table.geo.n_layers)))
    return {"hidden_kept": alloc.plan.d, "kv_groups_kept_per_layer": alloc.plan.groups,
            "neurons_kept_per_layer": alloc.plan.ffn}


# --- recovery distillation ---------------------------------------------------------------------


class _ReplayBody(nn.Module):
    """The teacher's decoder body, computing each batch once and replaying it afterwards."""

    def __init__(self, body: nn.Module) -> None:
        super().__init__()
        self.body = body
        self.cache: dict[bytes, torch.Tensor] = {}  # input_ids bytes -> (B, T, H) post-norm

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                use_cache: bool = False) -> SimpleNamespace:
        key = input_ids.cpu().numpy().tobytes() + bytes(str(tuple(input_ids.shape)), "ascii")
        if key not in self.cache:
            with torch.no_grad():
                self.cache[key] = self.body(input_ids=input_ids, attention_mask=attention_mask,
                                            use_cache=False).last_hidden_state
        return SimpleNamespace(last_hidden_state=self.cache[key])


class ReplayTeacher(nn.Module):
    """What ``distill_loss`` uses of a teacher (config, body, LM head), body outputs cached.

    Every row distils on the same batches from the same frozen teacher, so the teacher's hidden
    states are identical across rows; caching them (tokens × hidden × 4 bytes: 2.4 MB per 1k
    SmolLM2 tokens) saves the teacher body's forward in all rows but the first. The LM head
    still runs in ``distill_loss``'s chunks (its logits would be tokens × vocab × 4 bytes).
    """

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        from capgap.train.loss import decoder_body, lm_head

        self.config = teacher.config
        self._body = _ReplayBody(decoder_body(teacher))
        self._head = lm_head(teacher)
        self.eval()

    def get_decoder(self) -> nn.Module:
        return self._body

    def get_output_embeddings(self) -> nn.Module:
        return self._head


def recover(student: nn.Module, teacher: nn.Module, batches: list[torch.Tensor], args) -> dict:  # noqa: ANN001
    """Distil ``student`` in place on ``batches`` (one optimizer step each); loss trace."""
    from capgap.distill.chunked import distill_loss
    from capgap.train.loop import OptimConfig, lr_at, param_groups

    o = OptimConfig(lr=args.lr)
    student.requires_grad_(True)
    student.train()
    opt = torch.optim.AdamW(param_groups(student, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2),
                            eps=o.eps, foreach=False)
    losses = []
    for step, x in enumerate(batches):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, len(batches), o)
        out = distill_loss(student, teacher, x, alpha=args.alpha)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(student.parameters(), o.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(out.loss.detach()), 4))
        if not math.isfinite(losses[-1]):
            raise CapgapError(f"recovery diverged at step {step} (loss {losses[-1]}); lower --lr")
    student.eval()
    return {"steps": len(batches), "loss_first": losses[0] if losses else None,
            "loss_last": losses[-1] if losses else None, "losses": losses}


# --- the benchmark -----------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, default=Path("models/smollm2-135m"),
                   help="Hugging Face folder of the unpruned model (default: %(default)s)")
    p.add_argument("--corpus", default="default", help="capgap corpus source (default: embedded)")
    p.add_argument("--sparsities", default="0,0.1,0.2,0.3,0.5",
                   help="comma-separated fractions of total params; 0 = the dense model")
    p.add_argument("--methods", default=",".join(METHODS),
                   help="comma-separated, from " + ",".join((*METHODS, *MIXED)) + " (default: %(default)s)")
    p.add_argument("--random-seeds", type=int, default=3)
    p.add_argument("--allocation", choices=("global", "uniform"), default="global")
    p.add_argument("--seq-len", type=int, default=512, help="calibration and eval windows")
    p.add_argument("--calib-tokens", type=int, default=8192)
    p.add_argument("--calib-batch-size", type=int, default=4)
    p.add_argument("--eval-bytes", type=int, default=10000,
                   help="first N UTF-8 bytes of the validation text (default: %(default)s)")
    p.add_argument("--eval-batch-size", type=int, default=4)
    p.add_argument("--recovery-tokens", type=int, default=2048, help="0 = one-shot only")
    p.add_argument("--recovery-seq-len", type=int, default=256)
    p.add_argument("--recovery-batch-size", type=int, default=1)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--alpha", type=float, default=0.5, help="CE weight; 1 - alpha on the KD term")
    p.add_argument("--device", default="cpu", help="torch device (CUDA untested)")
    p.add_argument("--out", type=Path, default=Path("bench/results/prune_quality.json"))
    p.add_argument("--resume", action="store_true", help="keep rows already in --out; run the rest")
    p.add_argument("--overwrite", action="store_true", help="start over even if --out exists")
    args = p.parse_args(argv)
    args.sparsities = sorted({float(s) for s in args.sparsities.split(",") if s.strip()})
    args.methods = [m for m in args.methods.split(",") if m.strip()]
    bad = [m for m in args.methods if m not in (*METHODS, *MIXED)]
    if bad or any(not 0 <= s < 1 for s in args.sparsities):
        p.error(f"unknown methods {bad} or a sparsity outside [0, 1)")
    return args


def settings_of(args: argparse.Namespace) -> dict:
    """Everything a row's numbers depend on (a resumed run must match them)."""
    keys = ("corpus", "allocation", "seq_len", "calib_tokens", "calib_batch_size", "eval_bytes",
            "recovery_tokens", "recovery_seq_len", "recovery_batch_size", "lr", "alpha", "device")
    return {"model": str(args.model.resolve())} | {k: getattr(args, k) for k in keys}


def row_key(method: str, sparsity: float, seed: int | None) -> str:
    return f"{method}@{sparsity:g}" + ("" if seed is None else f"#{seed}")


def planned_rows(args: argparse.Namespace) -> list[tuple[str, float, int | None]]:
    rows = []
    for s in args.sparsities:
        if s == 0:
            rows.append(("dense", 0.0, None))
            continue
        for m in args.methods:
            seeds = range(args.random_seeds) if m == "random" else [None]
            rows.extend((m, s, seed) for seed in seeds)
    return rows


def start_results(args: argparse.Namespace) -> dict:
    """A fresh result dict, or the one in ``--out`` when resuming (settings must match)."""
    import json

    fresh = {"benchmark": "prune_quality", "settings": settings_of(args), "rows": {}, "timings": {}}
    if not args.out.exists() or args.overwrite:
        return fresh
    if not args.resume:
        raise CapgapError(f"{args.out} exists; pass --resume to continue it or --overwrite to start over")
    old = json.loads(args.out.read_text())
    diff = {k: (old.get("settings", {}).get(k), v) for k, v in fresh["settings"].items()
            if old.get("settings", {}).get(k) != v}
    if diff:
        raise CapgapError(f"--resume with different settings than {args.out}: {diff}; use --overwrite")
    return old


def environment() -> dict:
    import transformers

    return {"torch": torch.__version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "platform": platform.platform(), "cpu": platform.processor() or platform.machine()}


def load_teacher(path: Path):  # noqa: ANN201 - (model, tokenizer)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not (path / "config.json").exists():
        raise CapgapError(f"no model at {path}; " + CONVERT_HINT.format(path))
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    model.requires_grad_(False)
    return model, AutoTokenizer.from_pretrained(path)


def evaluate(model: nn.Module, tokenizer, text: str, args) -> dict:  # noqa: ANN001
    from capgap.evaluate.heldout import evaluate_text

    start = time.perf_counter()
    r = evaluate_text(model, tokenizer, text, seq_len=args.seq_len, batch_size=args.eval_batch_size)
    return {"ppl": round(r.ppl, 4), "loss": round(r.loss, 6), "bpb": round(r.bpb, 6),
            "seconds": round(time.perf_counter() - start, 2)}


def expressiveness_scores(teacher: nn.Module, store, args, results: dict):  # noqa: ANN001, ANN201
    """Scores from ``<out>.scores/`` when resuming, else one calibration pass (saved there)."""
    from capgap.data import PackedLoader
    from capgap.prune import Scores, score

    folder = args.out.with_suffix(".scores")
    if args.resume and args.out.exists() and (folder / "scores.json").exists():  # settings checked
        return Scores.load(folder)
    loader = PackedLoader(store.train, args.seq_len, args.calib_batch_size, seed=0)
    n = math.ceil(args.calib_tokens / loader.tokens_per_step)
    start = time.perf_counter()
    scores = score(teacher, (loader.batch(i) for i in range(n)), tokens=args.calib_tokens)
    results["timings"]["score"] = round(time.perf_counter() - start, 2)
    scores.save(folder)
    return scores


def method_scores(method: str, seed: int | None, teacher: nn.Module, expr):  # noqa: ANN001, ANN201
    from capgap.prune import baseline_scores

    if method in MIXED:
        units, hidden = (method_scores(m, seed, teacher, expr) for m in MIXED[method])
        return dataclasses.replace(units, hidden=hidden.hidden.clone())
    if method == "expressiveness":
        return expr
    return matched_scores(baseline_scores(teacher, method, seed=seed or 0), expr)


def run_row(method: str, sparsity: float, seed: int | None, ctx: SimpleNamespace) -> dict:
    """Prune (or copy, at 0), evaluate, recover, evaluate again."""
    from capgap.models.params import count_params
    from capgap.prune import prune

    args, teacher = ctx.args, ctx.teacher
    start = time.perf_counter()
    row: dict = {"method": method, "sparsity": sparsity, "seed": seed}
    if method == "dense":
        student = copy.deepcopy(teacher)
        row["params"] = count_params(student).total
    else:
        scores = method_scores(method, seed, teacher, ctx.expr)
        result = prune(teacher, scores, sparsity=sparsity, allocation=args.allocation)
        counts = kept_counts(result.report)
        if counts != ctx.plans[sparsity]["counts"]:  # the fairness guarantee, checked per row
            raise AssertionError(f"{row_key(method, sparsity, seed)} kept counts differ from expressiveness")
        student, row["params"] = result.model, result.report["params_after"]
        row["achieved_sparsity"] = result.report["achieved_sparsity"]
    row["seconds"] = {"prune": round(time.perf_counter() - start, 2)}
    row["oneshot"] = evaluate(student, ctx.tokenizer, ctx.text, args)
    row["recovered"] = None
    if ctx.recovery_batches:
        torch.manual_seed(0)
        t = time.perf_counter()
        row["recovery"] = recover(student, ctx.replay, ctx.recovery_batches, args)
        row["seconds"]["recovery"] = round(time.perf_counter() - t, 2)
        row["recovered"] = evaluate(student, ctx.tokenizer, ctx.text, args)
    row["seconds"]["total"] = round(time.perf_counter() - start, 2)
    return row


def plan_for(sparsity: float, ctx: SimpleNamespace) -> dict:
    """The expressiveness plan's counts at ``sparsity`` and what baselines would get unmatched."""
    from capgap.prune import baseline_scores, prune

    args = ctx.args
    report = prune(ctx.teacher, ctx.expr, sparsity=sparsity, allocation=args.allocation).report
    counts = kept_counts(report)
    own = {}
    for method, seed in [("magnitude", 0)] + [("random", s) for s in range(args.random_seeds)]:
        c = unmatched_counts(ctx.teacher, baseline_scores(ctx.teacher, method, seed=seed), sparsity,
                             args.allocation)
        same = all(c[k] == counts[k] for k in c)
        own[method if method == "magnitude" else f"random#{seed}"] = {"same_as_expressiveness": same} | (
            {} if same else c)
    return {"counts": counts, "achieved_sparsity": report["achieved_sparsity"],
            "component_sparsity": report["component_sparsity"], "unmatched_baseline_counts": own}


# --- summary -----------------------------------------------------------------------------------


def _cell(values: list[float]) -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def _values(rows: dict, method: str, sparsity: float, stage: str) -> list[float]:
    out = []
    for r in rows.values():
        s = 0.0 if r["method"] == "dense" else r["sparsity"]
        if (r["method"] == method or r["method"] == "dense") and s == sparsity and r.get(stage):
            out.append(r[stage]["ppl"])
    return out


def verdicts(results: dict) -> dict:
    """Per sparsity ≥ 0.1 and stage: does expressiveness beat magnitude and mean random?"""
    rows, out = results["rows"], {}
    for s in sorted({r["sparsity"] for r in rows.values() if r["sparsity"] > 0}):
        v = {}
        for stage in ("oneshot", "recovered"):
            e, m, r = (_values(rows, k, s, stage) for k in METHODS)
            if not e or not m or not r:
                continue
            v[stage] = {"expressiveness": e[0], "magnitude": m[0], "random_mean": statistics.mean(r),
                        "random_min": min(r), "random_seeds": len(r),
                        "beats_magnitude": e[0] < m[0], "beats_random_mean": e[0] < statistics.mean(r),
                        "beats_every_random_seed": e[0] < min(r)}
            v[stage]["beats_both"] = v[stage]["beats_magnitude"] and v[stage]["beats_random_mean"]
        out[f"{s:g}"] = v
    return out


def table(results: dict) -> str:
    """Markdown: method × sparsity, each cell 'one-shot / recovered' perplexity."""
    rows = results["rows"]
    sparsities = sorted({r["sparsity"] for r in rows.values()})
    head = "| method | " + " | ".join(f"{s:.0%}" for s in sparsities) + " |"
    lines = [head, "|---" * (len(sparsities) + 1) + "|"]
    present = {r["method"] for r in rows.values()}
    for method in [m for m in (*METHODS, *MIXED) if m in present or m in METHODS]:
        cells = []
        for s in sparsities:
            one, rec = _values(rows, method, s, "oneshot"), _values(rows, method, s, "recovered")
            cells.append(_cell(one) + (f" / {_cell(rec)}" if rec else ""))
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save(results: dict, args: argparse.Namespace) -> None:
    results["verdict"] = verdicts(results)
    results["table_markdown"] = table(results)
    write_json(args.out, results)


# --- main --------------------------------------------------------------------------------------


def setup(args: argparse.Namespace, results: dict) -> SimpleNamespace:
    from capgap.data import PackedLoader, TokenStore, load_corpus, validation_text

    timings = results["timings"]
    t = time.perf_counter()
    teacher, tokenizer = load_teacher(args.model)
    teacher.to(args.device)
    timings["load_model"] = round(time.perf_counter() - t, 2)
    t = time.perf_counter()
    corpus = load_corpus(args.corpus)
    store = TokenStore.build_or_load(corpus, tokenizer)
    text = validation_text(corpus, args.eval_bytes)
    timings["load_and_tokenise_corpus"] = round(time.perf_counter() - t, 2)
    loader = PackedLoader(store.train, args.recovery_seq_len, args.recovery_batch_size, seed=1)
    n_steps = math.ceil(args.recovery_tokens / loader.tokens_per_step) if args.recovery_tokens else 0
    results["data"] = {"eval_bytes": len(text.encode("utf-8")), "eval_tokens": len(tokenizer(text)["input_ids"]),
                       "train_tokens": int(len(store.train)), "recovery_steps": n_steps,
                       "recovery_tokens": n_steps * loader.tokens_per_step,
                       "calibration_seed": 0, "recovery_seed": 1}
    expr = expressiveness_scores(teacher, store, args, results)
    results["calibration"] = {k: expr.meta.get(k) for k in ("calibration_tokens", "calibration_batches",
                                                             "mean_loss", "seconds")}
    return SimpleNamespace(args=args, teacher=teacher, tokenizer=tokenizer, text=text, expr=expr,
                           replay=ReplayTeacher(teacher), plans={},
                           recovery_batches=[loader.batch(i).to(args.device) for i in range(n_steps)])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("CAPGAP_THREADS", os.cpu_count() or 1)))
    try:
        results = start_results(args)
        results["environment"] = environment()
        ctx = setup(args, results)
        from capgap.models.params import count_params

        results["model"] = {"path": str(args.model), "params": count_params(ctx.teacher).total,
                            "model_type": ctx.teacher.config.model_type}
        save(results, args)
        todo = [r for r in planned_rows(args) if row_key(*r) not in results["rows"]]
        print(f"{len(planned_rows(args)) - len(todo)} rows done, {len(todo)} to run", flush=True)
        session = time.perf_counter()
        for i, (method, sparsity, seed) in enumerate(todo):
            if sparsity > 0 and sparsity not in ctx.plans:
                ctx.plans[sparsity] = plan_for(sparsity, ctx)
                results.setdefault("plans", {})[f"{sparsity:g}"] = ctx.plans[sparsity]
            row = run_row(method, sparsity, seed, ctx)
            results["rows"][row_key(method, sparsity, seed)] = row
            save(results, args)
            rec = f", {row['recovered']['ppl']:10.2f} recovered" if row["recovered"] else ""
            eta = (time.perf_counter() - session) / (i + 1) * (len(todo) - i - 1)
            print(f"{row_key(method, sparsity, seed):>22}: ppl {row['oneshot']['ppl']:10.2f} one-shot{rec}"
                  f"  ({row['seconds']['total']:.0f} s; ~{eta / 60:.0f} min left)", flush=True)
    except CapgapError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\nheld-out perplexity, one-shot / recovered:\n" + results["table_markdown"])
    for s, v in results["verdict"].items():
        print(f"{float(s):.0%}: " + ", ".join(f"{st} beats both: {x['beats_both']}" for st, x in v.items()))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
