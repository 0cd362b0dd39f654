"""Sweep throughput: today's cell-by-cell path against lockstep groups, on one fixed grid.

The grid (defaults): four pythia-micro teachers (T1-T4 shapes, 1.1M-6.0M parameters, random
weights: throughput does not depend on training), three student sizes pruned from each (0.3M,
0.5M, 0.8M), one budget, each student distilled (0.5 CE + 0.5 soft CE) and trained alone (its
no-teacher baseline): 24 cells. ``--family/--teachers/--students/--vocab`` run another grid
(e.g. the ladder: ``--family pythia-ladder --teachers P3,P4,P5,P6 --students 140000,200000,280000
--vocab 512``). Teachers, scores and students are made once and copied into
every arm, so each arm times only its cells (``capgap.sweep.run_sweep`` wall clock).

Arms, run one after the other in this process (same machine state, same workers):

* ``old``: ``lockstep: false``, fp32, the head + loss computed by autograd per chunk
  (``CAPGAP_LOSS_KERNEL=autograd``) — one cell per task, as sweeps ran before;
* ``lockstep_fp32``: ``lockstep: true``, otherwise as ``old`` — must end bitwise equal to
  it (every cell's val_loss and every weight of its model): ``equal_to_separate_runs``;
* ``new``: lockstep plus the kernels that measured faster here (``--new-teacher-dtype``,
  default bf16 on CPUs with native bf16; ``--new-loss-kernel``, default ``fast``: the
  closed-form head + loss gradient in cache-sized passes), its losses compared with ``old``'s.

Each arm reports wall seconds (cells per hour, the goal's unit) and CPU seconds of the driver
and its workers (cells per CPU-hour), which other load on the machine disturbs less.

Also timed (``kernels``): one student step (fast and autograd loss kernels) and one teacher
forward in fp32, under bf16 autocast and under ``torch.compile``, interleaved, to show which
options pay at this scale.

    python bench/sweep_throughput.py [--tokens 150000[,300000]] [--workers 2] [--out bench/results/sweep_throughput.json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_throughput import matmul_peak  # noqa: E402

from capgap import config as cfgmod  # noqa: E402
from capgap.io import write_json  # noqa: E402
from capgap.sweep import SweepConfig, read_rows, run_sweep  # noqa: E402
from capgap.sweep.grid import build_grid  # noqa: E402
from capgap.sweep.students import prepare_students, resolve_teachers  # noqa: E402
from capgap.train.loss import LOSS_KERNEL_ENV  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tokens", type=_budgets, default=[150_000],
                   help="the cells' budgets, comma-separated (default 150000); with two, the "
                   "lockstep arms share one teacher forward across budgets")
    p.add_argument("--workers", type=int, default=2, help="worker processes (cores / workers threads each)")
    p.add_argument("--family", default="pythia-micro")
    p.add_argument("--teachers", default="T1,T2,T3,T4", help="sizes of --family used as teachers")
    p.add_argument("--students", default="300000,500000,800000", help="student sizes (params)")
    p.add_argument("--vocab", type=int, default=4096, help="corpus BPE size (the study's)")
    p.add_argument("--new-teacher-dtype", default="bf16", help="teacher dtype of the new arm")
    p.add_argument("--new-loss-kernel", default="fast", choices=("fast", "autograd"),
                   help="head + loss kernel of the new arm (old arms: autograd, as before)")
    p.add_argument("--kernel-repeats", type=int, default=5)
    p.add_argument("--work", type=Path, default=Path("bench/out/sweep_throughput"))
    p.add_argument("--out", type=Path, default=Path("bench/results/sweep_throughput.json"))
    return p.parse_args(argv)


def _budgets(text: str) -> list[int]:
    return [int(float(t)) for t in text.split(",") if t.strip()]


def make_teachers(args: argparse.Namespace) -> list[str]:
    """Random-weight teachers of the family's shapes, saved with the corpus tokenizer."""
    from capgap.data import get_tokenizer, load_corpus
    from capgap.models import build_model, load_family

    tok = get_tokenizer(load_corpus("default"), args.vocab)
    family = load_family(args.family)
    paths = []
    for i, name in enumerate(args.teachers.split(",")):
        path = args.work / "teachers" / name
        if not (path / "config.json").is_file():
            torch.manual_seed(i)
            model = build_model(family.build_config(name, vocab_size=len(tok),
                                                    eos_token_id=tok.eos_token_id,
                                                    bos_token_id=tok.bos_token_id))
            model.save_pretrained(path)
            tok.save_pretrained(path)
        paths.append(str(path))
    return paths


def students(args: argparse.Namespace) -> list[int]:
    return [int(float(x)) for x in args.students.split(",")]


def sweep_config(args: argparse.Namespace, teachers: list[str]) -> SweepConfig:
    raw = {
        "teachers": {"models": teachers},
        "students": {"sizes": students(args)},
        "tokens": args.tokens, "seeds": [0], "baseline": True,
        "train": {"micro_batch_size": 32, "eval_tokens": 8192, "precision": "fp32",
                  "optim": {"lr": 1e-3}},
        "eval": {"max_bytes": 100_000}, "scoring": {"tokens": 16_384, "batch_size": 16},
        "law_bootstrap": 10, "workers": args.workers,
    }
    return cfgmod.from_dict(SweepConfig, raw, where="bench")


def shared_students(cfg: SweepConfig, root: Path) -> None:
    """Scores and students once, in ``root`` (copied into every arm)."""
    teachers = resolve_teachers(cfg, root)
    prepare_students(cfg, root, build_grid(cfg, teachers))


def run_arm(name: str, cfg: SweepConfig, args: argparse.Namespace, kernel: str) -> dict[str, Any]:
    """One arm's sweep, its workers on the head + loss ``kernel`` (CAPGAP_LOSS_KERNEL)."""
    os.environ[LOSS_KERNEL_ENV] = kernel  # the workers spawned by run_sweep inherit it
    out = args.work / name
    if out.exists():
        shutil.rmtree(out)
    for part in ("scores", "students"):
        shutil.copytree(args.work / "shared" / part, out / part)
    load, cpu = os.getloadavg()[0], cpu_seconds()
    start = time.perf_counter()
    summary = run_sweep(cfg, out, workers=args.workers, progress=False)
    seconds = time.perf_counter() - start
    cpu = cpu_seconds() - cpu
    rows = {r["key"]: r for r in read_rows(out)}
    if summary.failed or summary.ran != len(rows):
        raise SystemExit(f"arm {name}: {summary.failed} failed cells of {len(rows)}")
    print(f"{name}: {len(rows)} cells in {seconds:.1f} s", flush=True)
    return {"seconds": round(seconds, 2), "cpu_seconds": round(cpu, 2), "cells": len(rows),
            "cells_per_hour": round(len(rows) / seconds * 3600, 1),
            "cells_per_cpu_hour": round(len(rows) / cpu * 3600, 1), "rows": rows,
            "cell_flops": sum(cell_flops(r) for r in rows.values()),
            "load_average_before_after": [round(load, 2), round(os.getloadavg()[0], 2)]}


def cpu_seconds() -> float:
    """User + system CPU time of this process and its finished children (the worker pools,
    shut down at the end of each sweep): less sensitive than wall time to other load."""
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def cell_flops(row: Any) -> float:
    """Model FLOPs the cell needs when run alone, as its row records them: the student's
    training plus, for a distilled cell, the teacher's forward (scoring is shared, not timed)."""
    return row["teacher_flops"] + row["student_flops"]


def _cell(row: dict[str, Any]) -> tuple:
    """A cell's identity across arms (their keys differ where the teacher dtype does)."""
    return row["teacher"], row["student_target"], row["objective"], row["tokens"]


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Every cell: equal val_loss and torch.equal weights of the trained student."""
    from safetensors.torch import load_file

    for key, ra in a.items():
        rb = b[key]
        if ra["val_loss"] != rb["val_loss"]:
            return False
        wa = load_file(str(next(Path(ra["model_dir"]).glob("*.safetensors"))))
        wb = load_file(str(next(Path(rb["model_dir"]).glob("*.safetensors"))))
        if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
            return False
    return True


def kernels(args: argparse.Namespace, teachers: list[str]) -> dict[str, Any]:
    """Median seconds of a student step and a teacher forward per option, interleaved."""
    from capgap.distill.chunked import distill_loss
    from capgap.models.anymodel import load_any_model
    from capgap.train.loss import decoder_body

    threads = max(1, (os.cpu_count() or 1) // args.workers)
    torch.set_num_threads(threads)
    names = args.teachers.split(",")
    student, _ = load_any_model(str(args.work / "shared" / "students" / names[2]
                                    / f"{students(args)[0]}-global"))
    teacher, _ = load_any_model(teachers[2])
    teacher.eval().requires_grad_(False)
    ids = torch.randint(0, teacher.config.vocab_size, (32, 128))
    opt = torch.optim.AdamW(student.parameters(), lr=1e-4, foreach=False)

    def step(bf16: bool, kernel: str = "fast"):  # noqa: ANN202
        def run() -> None:
            os.environ[LOSS_KERNEL_ENV] = kernel
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = distill_loss(student, teacher, ids)
            out.loss.backward()
            opt.step()
            opt.zero_grad()
        return run

    def forward(model: Any, bf16: bool):  # noqa: ANN202, ANN401
        def run() -> None:
            with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                model(input_ids=ids, use_cache=False)
        return run

    body = decoder_body(teacher)
    compiled = torch.compile(body)
    start = time.perf_counter()
    forward(compiled, False)()
    compile_s = time.perf_counter() - start
    bf16_teacher = load_any_model(teachers[2])[0].to(torch.bfloat16).eval()
    cases = {"distill_step_fp32": step(False),
             "distill_step_fp32_autograd_loss": step(False, "autograd"),
             "distill_step_bf16_autocast": step(True),
             "teacher_forward_fp32": forward(body, False),
             "teacher_forward_bf16_autocast": forward(body, True),
             "teacher_forward_bf16_weights": forward(decoder_body(bf16_teacher), False),
             "teacher_forward_compiled_fp32": forward(compiled, False)}
    times: dict[str, list[float]] = {k: [] for k in cases}
    for f in cases.values():
        f()
    for _ in range(args.kernel_repeats):
        for k, f in cases.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
    out = {k: {"median_s": statistics.median(v), "tokens_per_s": ids.numel() / statistics.median(v)}
           for k, v in times.items()}
    return {"threads": threads, "student": f"{names[2]} -> {students(args)[0]:,}",
            "teacher": names[2], "compile_s": compile_s,
            "cases": out}


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ.setdefault("CAPGAP_NO_PROGRESS", "1")
    args.work.mkdir(parents=True, exist_ok=True)
    teachers = make_teachers(args)
    base = sweep_config(args, teachers)
    shared_students(base, args.work / "shared")
    peak = matmul_peak()
    old = run_arm("old", dataclasses.replace(base, lockstep=False), args, "autograd")
    lock = run_arm("lockstep_fp32", base, args, "autograd")
    new = run_arm("new", dataclasses.replace(base, teacher_dtype=args.new_teacher_dtype), args,
                  args.new_loss_kernel)
    equal = same_weights(old["rows"], lock["rows"])
    by_cell = {_cell(r): r for r in new["rows"].values()}  # the teacher dtype is in the key
    deltas = [by_cell[_cell(r)]["val_loss"] - r["val_loss"] for r in old["rows"].values()
              if r["alpha"] < 1]
    arms = {}
    for name, arm in (("old", old), ("lockstep_fp32", lock), ("new", new)):
        arms[name] = {k: v for k, v in arm.items() if k != "rows"}
        arms[name]["effective_fraction_of_matmul_peak"] = round(
            arm["cell_flops"] / arm["seconds"] / peak, 4)
    result = {
        "what": "sweep cells per hour: cell-by-cell (old) vs lockstep groups (new)",
        "grid": {"family": args.family, "teachers": args.teachers.split(","),
                 "students": students(args),
                 "tokens": args.tokens, "cells": old["cells"], "vocab": args.vocab,
                 "batch": "32 x 128", "workers": args.workers},
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                    "torch": torch.__version__, "matmul_peak_flops_per_s": peak},
        "cells_per_hour_old": old["cells_per_hour"],
        "cells_per_hour_lockstep_fp32": lock["cells_per_hour"],
        "cells_per_hour_new": new["cells_per_hour"],
        "speedup": round(new["cells_per_hour"] / old["cells_per_hour"], 3),
        "speedup_lockstep_fp32": round(lock["cells_per_hour"] / old["cells_per_hour"], 3),
        "speedup_cpu_time": round(new["cells_per_cpu_hour"] / old["cells_per_cpu_hour"], 3),
        "speedup_cpu_time_lockstep_fp32": round(
            lock["cells_per_cpu_hour"] / old["cells_per_cpu_hour"], 3),
        "equal_to_separate_runs": equal,
        "new_teacher_dtype": args.new_teacher_dtype,
        "old_loss_kernel": "autograd", "new_loss_kernel": args.new_loss_kernel,
        "new_vs_old_val_loss": {"max_abs": max(map(abs, deltas)),
                                "mean": statistics.mean(deltas)},
        "arms": arms,
    }
    write_json(args.out, result)  # the arms are kept even if the kernel timing fails
    result["kernels"] = kernels(args, teachers)
    write_json(args.out, result)
    print(json.dumps({k: v for k, v in result.items() if k not in ("arms", "kernels")}, indent=1))


if __name__ == "__main__":
    main()
