"""capgap eval: held-out loss/ppl/bpb, or lm-evaluation-harness benchmarks, of one or more models."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from capgap.cli.common import print_json
from capgap.errors import CapgapError
from capgap.io import write_json
from capgap.report.text import table

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = ("evaluate models: held-out loss (nats/token), perplexity and bits per byte, or "
        "lm-eval benchmarks with --tasks/--suite; --compare tabulates saved results")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="*",
                   help="model folder(s), capgap run folder(s) or hub name(s)")
    p.add_argument("--corpus", default="default",
                   help="held-out: validation text source (default: the embedded corpus)")
    p.add_argument("--max-bytes", type=int, default=0,
                   help="held-out: score the first N bytes of the validation split (0: all)")
    p.add_argument("--seq-len", type=int, default=0,
                   help="held-out: window length (default: the model's context, at most 1024)")
    p.add_argument("--batch-size", type=int, default=8)
    g = p.add_argument_group("lm-evaluation-harness (pip install 'capgap[eval]')")
    g.add_argument("--tasks", default="",
                   help="comma-separated lm-eval tasks/groups, e.g. mmlu,gsm8k "
                        "(bundled offline: capgap_offline)")
    g.add_argument("--suite", help="a named suite (paper, offline) or a suite YAML file")
    g.add_argument("--num-fewshot", type=int, help="override every task's shot count")
    g.add_argument("--limit", type=float,
                   help="examples per task (>= 1) or a fraction of each task (< 1)")
    g.add_argument("--max-length", type=int, help="context length lm-eval may use")
    g.add_argument("--allow-code-execution", action="store_true",
                   help="let code tasks (HumanEval) execute model-written code")
    g.add_argument("--compare", nargs="+", type=Path, metavar="RESULTS_JSON",
                   help="tabulate saved results side by side instead of evaluating")
    p.add_argument("--out", type=Path, help="also write the results to this JSON file")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    if args.compare:
        if args.model:
            raise CapgapError("give models to evaluate or --compare RESULTS_JSON, not both")
        return _print_compare([r for path in args.compare for r in _read_results(path)], args)
    if not args.model:
        raise CapgapError("give a model folder (or --compare RESULTS_JSON ...)")
    if args.tasks or args.suite:
        return _run_lm_eval(args)
    return _run_heldout(args)


def _note_per_layer_shapes(models: list[str]) -> None:
    """A global-allocation student loads here but not in plain transformers: say how."""
    from capgap.models.anymodel import has_per_layer_shapes

    for m in models:
        if has_per_layer_shapes(m):
            print(f"note: {m} has per-layer shapes (global allocation): capgap loads it; for "
                  f"plain transformers run `capgap convert pruned {m} --out DIR`",
                  file=sys.stderr)


def _run_heldout(args: argparse.Namespace) -> int:
    from capgap.evaluate.api import evaluate_model

    _note_per_layer_shapes(args.model)
    results = [evaluate_model(m, corpus=args.corpus, max_bytes=args.max_bytes,
                              seq_len=args.seq_len, batch_size=args.batch_size)
               for m in args.model]
    _save(args, results)
    if args.json:
        print_json(results[0] if len(results) == 1 else results)
        return 0
    for res in results:
        print(f"{res['model']}: loss {res['loss']:.4f} nats/token  ppl {res['ppl']:.2f}  "
              f"bpb {res['bpb']:.4f}  ({res['tokens']:,} tokens, {res['bytes']:,} bytes, "
              f"window {res['seq_len']})")
    return 0


def _run_lm_eval(args: argparse.Namespace) -> int:
    from capgap.evaluate.lm_eval import evaluate_tasks

    _note_per_layer_shapes(args.model)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    limit = args.limit
    if limit is not None:
        if limit <= 0:
            raise CapgapError(f"--limit must be positive, got {limit:g}")
        limit = int(limit) if limit >= 1 else limit
    results = [evaluate_tasks(m, tasks=tasks, suite=args.suite, num_fewshot=args.num_fewshot,
                              limit=limit, batch_size=args.batch_size, max_length=args.max_length,
                              allow_code_execution=args.allow_code_execution)
               for m in args.model]
    _save(args, results)
    return _print_compare(results, args)


def _save(args: argparse.Namespace, results: list[dict[str, Any]]) -> None:
    if args.out:
        write_json(args.out, results[0] if len(results) == 1 else results)


def _read_results(path: Path) -> list[dict[str, Any]]:
    """One result or a list of results from a JSON file ``capgap eval --out`` wrote."""
    try:
        data = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError) as e:
        raise CapgapError(f"cannot read results {path}: {e}") from None
    items = data if isinstance(data, list) else [data]
    for item in items:
        if not isinstance(item, dict) or "headline" not in item:
            raise CapgapError(f"{path} is not a `capgap eval --tasks ... --out` result")
    return items


def _print_compare(results: list[dict[str, Any]], args: argparse.Namespace) -> int:
    from capgap.evaluate.lm_eval import compare

    rows, columns = compare(results)
    if args.json:
        print_json(results[0] if len(results) == 1 and not args.compare
                   else {"columns": columns, "rows": rows})
        return 0
    cols = [("task", "task", ""), ("metric", "metric", "")] + [(c, c, ".2f") for c in columns]
    print(table(rows, cols))
    if any(r.get("limit") for r in results):
        print("(--limit was set: scores on a subset, not comparable to published numbers)")
    return 0
