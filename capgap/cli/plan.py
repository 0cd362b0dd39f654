"""capgap plan: FLOPs, GPU-hours and the sharding that fits, for a distillation run."""

from __future__ import annotations

import argparse

from capgap.cli.common import print_json
from capgap.errors import CapgapError
from capgap.report.text import table
from capgap.units import parse_count, parse_size

# The stage's API is imported inside the functions: --help loads every stage (cli/__init__.py).

HELP = "estimate FLOPs, GPU-hours and per-GPU memory of a distillation run; pick the sharding"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True,
                   help="built-in spec (llama2-7b, pythia-1.4b, ...), model folder or hub name")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--student-params", help="student size (e.g. 3e9, 2.9B): its shape follows "
                                            "MiniMA's rule (capgap.recipe.shapes)")
    g.add_argument("--student", help="student spec, like --teacher")
    p.add_argument("--tokens", required=True, help="distillation tokens, e.g. 126e9 or 126B")
    p.add_argument("--gpus", type=int, required=True)
    p.add_argument("--gpu-mem", type=float, required=True, help="memory per GPU in GiB, e.g. 80")
    p.add_argument("--mfu", type=float, default=0.4,
                   help="model FLOPs utilisation assumed (default 0.4)")
    p.add_argument("--gpu-flops", type=float, default=312e12,
                   help="peak dense bf16 FLOP/s per GPU (default 312e12: A100)")
    p.add_argument("--seq-len", type=int, default=4096)
    p.add_argument("--micro-batch", type=int, default=1, help="sequences per GPU per step")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from capgap.plan import load_spec, plan
    from capgap.recipe.shapes import minima_shape, reshape_config

    if min(args.gpus, args.seq_len, args.micro_batch) < 1 or args.gpu_mem <= 0:
        raise CapgapError("--gpus, --gpu-mem, --seq-len and --micro-batch must be positive")
    if not 0 < args.mfu <= 1:
        raise CapgapError(f"--mfu must be in (0, 1], got {args.mfu}")
    teacher = load_spec(args.teacher)
    shape = None
    if args.student:
        student = load_spec(args.student)
    else:
        shape = minima_shape(teacher, parse_count(args.student_params))
        student = reshape_config(teacher, shape)
    p = plan(teacher, student, parse_size(args.tokens), args.gpus, args.gpu_mem, args.mfu,
             args.gpu_flops, args.seq_len, args.micro_batch)
    if args.json:
        print_json(p.to_dict() | {"student_shape": shape.to_dict() if shape else None})
        return 0
    print(_summary(p, shape))
    rows = [o.__dict__ | {"ckpt": "yes" if o.checkpointing else "no",
                          "ok": "fits" if o.fits else "-"} for o in p.options]
    print(table(rows, [("strategy", "sharding", ""), ("teacher", "teacher", ""),
                       ("ckpt", "act. ckpt", ""), ("weights", "weights", ".1f"),
                       ("grads", "grads", ".1f"), ("optimizer", "optim", ".1f"),
                       ("activations", "activ.", ".1f"), ("teacher_mem", "teacher", ".1f"),
                       ("buffers", "buffers", ".1f"), ("total", "GiB/GPU", ".1f"),
                       ("ok", f"<= {p.usable_fraction:.0%} of {p.gpu_mem_gib:g}", "")]))
    c = p.choice
    print(f"\nplan: {c.strategy}, teacher {c.teacher}, activation checkpointing "
          f"{'on' if c.checkpointing else 'off'} ({c.total:.1f} GiB/GPU)"
          + (f"; host RAM for offloaded optimizer ~{c.cpu_per_node:.0f} GiB/node"
             if c.cpu_per_node else "") if c else
          "\nplan: nothing fits; add GPUs, lower --micro-batch/--seq-len, or use bigger cards")
    return 0


def _summary(p, shape) -> str:  # noqa: ANN001 - a Plan and a Shape | None
    t, s, f = p.teacher, p.student, p.flops
    lines = [f"teacher {t['params'] / 1e9:.3f}B params ({t['layers']} layers, hidden {t['hidden']})",
             f"student {s['params'] / 1e9:.3f}B params ({s['layers']} layers, hidden {s['hidden']}, "
             f"FFN {s['ffn']})"]
    if shape is not None:
        lines.append(f"  MiniMA shape: keep layers {shape.layers_kept[0]}..{shape.layers_kept[-1]}, "
                     f"{shape.heads} heads / {shape.kv_heads} KV ({shape.error:+.2%} of target; "
                     f"{shape.binding})")
    lines += [
        f"FLOPs: {f['total']:.3g} = teacher fwd {f['teacher_forward']:.3g} + student train "
        f"{f['student_train']:.3g} ({f['per_token'] / 1e9:.1f} GFLOP/token; 2NtD+6NsD gives "
        f"{f['simple_2NtD_6NsD']:.3g})",
        f"time at MFU {p.mfu:.0%} of {p.gpu_flops:.3g} FLOP/s: {p.gpu_hours:,.0f} GPU-hours = "
        f"{p.gpu_hours / 24:,.0f} GPU-days = {p.wall_days:.1f} days on {p.gpus} GPUs", ""]
    return "\n".join(lines)
