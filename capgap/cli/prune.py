"""``capgap prune MODEL --sparsity P --out DIR``: a physically smaller student of MODEL.

Scores heads, FFN neurons, hidden dims and layers on calibration text (or reuses saved
scores), allocates to the requested size, slices the weights and writes the student with
``prune_report.json``. Everything is checked before anything is written.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from capgap.cli.common import print_json
from capgap.errors import CapgapError
from capgap.prune.methods import (  # torch-free: the parser lists the choices
    ALLOCATIONS,
    DEFAULT_METHOD,
    DROP_RULES,
    METHODS,
    get_method,
    help_lines,
)
from capgap.units import flag_type, parse_count

HELP = "prune a model to a sparsity or a parameter count (heads, neurons, hidden width, layers)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.formatter_class = argparse.RawDescriptionHelpFormatter  # keeps the method list's lines
    p.epilog = "pruning methods (--method; a unit is a head/KV group, FFN neuron or hidden channel):\n" + help_lines()
    p.add_argument("model", help="model folder, run folder or hub name (gpt2, gpt_neox, llama layouts)")
    size = p.add_mutually_exclusive_group(required=True)
    size.add_argument("--sparsity", type=float, help="fraction of total params to remove, in [0, 1)")
    size.add_argument("--target-params", type=flag_type(parse_count), metavar="N",
                      help="student size in total params (e.g. 45M); lands within 1 %%")
    p.add_argument("--out", required=True, type=Path, help="output folder for the student")
    p.add_argument("--allocation", choices=ALLOCATIONS, default="global",
                   help="global: heads/neurons ranked across layers (paper's pilot; capgap format); "
                   "uniform: same counts per layer (MiniMA; vanilla HF checkpoint)")
    p.add_argument("--multiple", type=int, default=1,
                   help="round kept hidden dims and FFN neurons to a multiple (8 or 64 for GPU shapes)")
    p.add_argument("--drop-layers", type=int, default=0, metavar="K",
                   help="depth pruning: with --drop-rule symmetric drop K bottom and K top layers "
                   "(MiniMA), with score the K layers of lowest layer-mask score")
    p.add_argument("--drop-rule", choices=DROP_RULES, default="symmetric")
    p.add_argument("--drop-layer-ids", help="comma-separated layer ids to drop (overrides --drop-layers)")
    p.add_argument("--scores", type=Path, help="reuse scores saved by an earlier run (DIR/scores)")
    p.add_argument("--method", metavar="NAME",
                   help=f"how units are scored: {', '.join(METHODS)} (listed below; default {DEFAULT_METHOD})")
    p.add_argument("--scorer", choices=("gradient", "magnitude", "random"),
                   help="older name of --method (gradient = expressiveness)")
    p.add_argument("--calib-tokens", type=flag_type(parse_count), default=65536,
                   help="calibration tokens for scoring (default 65536)")
    p.add_argument("--batch-size", type=int, default=8, help="calibration batch size (default 8)")
    p.add_argument("--seq-len", type=int, help="calibration sequence length (default: model context, max 512)")
    p.add_argument("--corpus", help="calibration text (default: the embedded corpus, training split)")
    p.add_argument("--seed", type=int, default=0, help="calibration batch order, and the random method's seed")
    p.add_argument("--export", choices=("auto", "capgap", "vanilla"), default="auto",
                   help="auto: vanilla for uniform, capgap format for global; vanilla: always a "
                   "vanilla checkpoint (per-layer shapes zero-padded, same logits)")
    p.add_argument("--device", default="cpu", help="device for scoring and slicing (cpu, cuda)")
    p.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def _check_flags(args: argparse.Namespace) -> None:
    """Everything that can be refused without loading the model (nothing is written)."""
    if args.sparsity is not None and not 0.0 <= args.sparsity < 1.0:
        raise CapgapError(f"--sparsity must be in [0, 1), got {args.sparsity}")
    if args.target_params is not None and args.target_params <= 0:
        raise CapgapError(f"--target-params must be positive, got {args.target_params}")
    if args.multiple < 1:
        raise CapgapError(f"--multiple must be a positive integer, got {args.multiple}")
    if args.out.exists() and not args.overwrite:
        raise CapgapError(f"{args.out} exists; pass --overwrite to replace it")
    if args.batch_size < 1 or (args.seq_len is not None and args.seq_len < 2):
        raise CapgapError("--batch-size must be >= 1 and --seq-len >= 2")
    if args.scores is not None and not (args.scores / "scores.json").is_file():
        raise CapgapError(f"no scores at {args.scores} (expected scores.json and scores.safetensors)")
    get_method(_method(args))


def _method(args: argparse.Namespace) -> str:
    """--method, else the older --scorer, else the default."""
    old = {"gradient": DEFAULT_METHOD}.get(args.scorer, args.scorer)
    if args.method and old and args.method != old:
        raise CapgapError(f"--method {args.method} and --scorer {args.scorer} disagree; give --method only")
    return args.method or old or DEFAULT_METHOD


def _drop(args: argparse.Namespace) -> int | list[int] | None:
    if args.drop_layer_ids:
        try:
            return [int(x) for x in args.drop_layer_ids.split(",") if x.strip()]
        except ValueError:
            raise CapgapError(f"--drop-layer-ids must be comma-separated integers, got {args.drop_layer_ids!r}") from None
    return args.drop_layers or None


def calibration(model, tokenizer, args: argparse.Namespace) -> list:  # noqa: ANN001
    """Training-split windows of ``--corpus`` in the model's own tokenizer."""
    from capgap.data import calibration_batches
    from capgap.evaluate.heldout import model_context

    seq_len = args.seq_len or model_context(model, default=512)
    return calibration_batches(args.corpus, tokenizer, args.calib_tokens, seq_len, args.batch_size, args.seed)


def run(args: argparse.Namespace) -> int:
    from capgap.models.anymodel import load_any_model
    from capgap.prune import prune, save_pruned
    from capgap.prune.api import check

    _check_flags(args)
    start = time.perf_counter()
    model, tokenizer = load_any_model(args.model)
    settings = {"sparsity": args.sparsity, "target_params": args.target_params, "allocation": args.allocation,
                "multiple": args.multiple, "drop_layers": _drop(args), "drop_rule": args.drop_rule}
    saved = _saved_scores(args)
    depth_only = saved.meta.get("depth_only", False) if saved else _method_entry(args).depth_only
    check(model, **settings, depth_only=depth_only)  # refuse impossible sizes before the calibration pass
    model.to(args.device)
    scores = saved or _score(model, tokenizer, args)
    result = prune(model, scores, **settings, inplace=True)  # the teacher is not needed afterwards
    result.report["source_model"] = str(args.model)
    result.report["scores_from"] = str(args.scores) if args.scores else f"{_method(args)} (saved in scores/)"
    result.report["seconds"]["total"] = round(time.perf_counter() - start, 2)
    result.model.to("cpu")
    save_pruned(result, tokenizer, args.out, export=args.export, overwrite=args.overwrite,
                scores=None if args.scores else scores)
    report = json.loads((args.out / "prune_report.json").read_text())
    if args.json:
        print_json(report)
    else:
        print(_summary(report, args.out))
    return 0


def _method_entry(args: argparse.Namespace):  # noqa: ANN201 - a Method
    return get_method(_method(args))


def _saved_scores(args: argparse.Namespace):  # noqa: ANN202 - Scores or None
    """Scores of ``--scores`` (their method must be the one asked for, if one was)."""
    from capgap.prune import Scores

    if args.scores is None:
        return None
    scores = Scores.load(args.scores)
    if (args.method or args.scorer) and scores.method != _method(args):
        raise CapgapError(f"the scores in {args.scores} were made by {scores.method}, not {_method(args)}; "
                          "leave out --method or score again")
    return scores


def _score(model, tokenizer, args: argparse.Namespace):  # noqa: ANN001, ANN202 - Scores
    from capgap.prune import score

    method = _method_entry(args)
    batches = calibration(model, tokenizer, args) if method.needs_data else None
    return score(model, batches, tokens=args.calib_tokens, progress=True, method=method.name, seed=args.seed)


def _summary(r: dict, out: Path) -> str:
    bind = f"; bound by {r['binding_constraint']}" if r["binding_constraint"] else ""
    return (
        f"pruned {r['params_before'] / 1e6:.2f}M -> {r['params_after'] / 1e6:.2f}M params "
        f"(sparsity {r['achieved_sparsity']:.3f}, target {r['target_sparsity']:.3f}{bind}); "
        f"{r['allocation']}: {len(r['layers_kept'])}/{r['layers_before']} layers, hidden "
        f"{r['hidden_kept']}/{r['hidden_before']}, heads {sum(r['heads_kept_per_layer'])}/"
        f"{r['heads_per_layer_before'] * r['layers_before']}, neurons {sum(r['neurons_kept_per_layer'])}/"
        f"{r['neurons_per_layer_before'] * r['layers_before']} -> {out} ({r['export']['format']} format)"
    )
