"""Distillation step throughput: our engine's step vs a straightforward PyTorch loop.

Same models (pythia-micro shapes, random init), batch, loss (0.5 CE + 0.5 soft CE at
temperature 1), dtype (fp32) and thread count. One optimiser step is:

* ours: the engine's step function through the shared loop's pieces (StepModule,
  ``accumulate``, gradient clipping, AdamW): fused chunked heads, no [B, T, V] tensor kept;
  timed at the default chunk size and at the others of ``--chunks`` (4096 rows = one chunk);
* reference: teacher forward under no_grad, student forward, full-vocabulary
  ``log_softmax`` CE + soft CE, backward, AdamW step (no clipping: ours does a bit more).

Each method runs ``--steps`` steps per repeat, methods interleaved (order alternating) for
``--repeats`` repeats, so load from other processes hits both alike; reported: the median
step time over all repeats, tokens/s, ours/reference, model FLOP/s (6 x student matmul
weights + 2 x teacher's, plus attention) and its fraction of the measured matmul peak.

    python bench/distill_throughput.py [--pairs T0:T2,T1:T3] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pretrain_throughput import matmul_peak  # noqa: E402

from capgap.distill.engine import ObjectiveConfig, make_step  # noqa: E402
from capgap.models import build_model, load_family  # noqa: E402
from capgap.models.params import count_params  # noqa: E402
from capgap.train.distributed import StepModule, setup  # noqa: E402
from capgap.train.loop import (  # noqa: E402
    TrainConfig,
    accumulate,
    make_optimizer,
    matmul_flops_per_token,
)


class Fixed:
    """A loader that always returns the same batch (data loading is not measured)."""

    def __init__(self, ids: torch.Tensor) -> None:
        self.ids, self.batch_size, self.seq_len = ids, ids.shape[0], ids.shape[1]

    def batch(self, step: int) -> torch.Tensor:
        return self.ids


def ours(student, teacher, ids, chunk_size: int):  # noqa: ANN001, ANN201 - returns a step
    cfg = TrainConfig(micro_batch_size=ids.shape[0], precision="fp32")
    par = setup()
    wrapped = StepModule(student, make_step(teacher, ObjectiveConfig(chunk_size=chunk_size)))
    opt, loader = make_optimizer(wrapped, cfg.optim), Fixed(ids)

    def step() -> float:
        loss, _ = accumulate(wrapped, loader, 0, cfg, par, ids.device)
        par.clip_grad_norm(wrapped, cfg.optim.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss

    return step


def reference(student, teacher, ids):  # noqa: ANN001, ANN201 - returns a step
    opt = torch.optim.AdamW(student.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)

    def step() -> float:
        with torch.no_grad():
            t_logits = teacher(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
        s_logits = student(input_ids=ids).logits[:, :-1]  # (B, T-1, V)
        log_q = F.log_softmax(s_logits, dim=-1)
        p = F.softmax(t_logits, dim=-1)
        ce = F.nll_loss(log_q.flatten(0, 1), ids[:, 1:].flatten())
        soft_ce = -(p * log_q).sum(-1).mean()
        loss = 0.5 * ce + 0.5 * soft_ce
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def timed(step, n: int) -> list[float]:  # noqa: ANN001
    out = []
    for _ in range(n):
        t = time.perf_counter()
        step()
        out.append(time.perf_counter() - t)
    return out


def bench_pair(fam, s_name: str, t_name: str, args: argparse.Namespace) -> dict:  # noqa: ANN001
    torch.manual_seed(0)
    make = lambda name: build_model(fam.build_config(name, vocab_size=args.vocab))  # noqa: E731
    teacher = make(t_name).eval().requires_grad_(False)
    ids = torch.randint(0, args.vocab, (args.batch, fam.seq_len))
    default = ObjectiveConfig().chunk_size
    chunks = sorted({default, *args.chunks})
    steps = {f"ours_chunk{c}": ours(make(s_name).train(), teacher, ids, c) for c in chunks}
    steps["reference"] = reference(make(s_name).train(), teacher, ids)
    for step in steps.values():
        timed(step, 1)  # warm-up
    times = {k: [] for k in steps}
    order = list(steps)
    for r in range(args.repeats):
        for k in order if r % 2 == 0 else order[::-1]:
            times[k] += timed(steps[k], args.steps)
    tokens = ids.numel()
    student = make(s_name)
    fpt = matmul_flops_per_token(student, fam.seq_len) + \
        matmul_flops_per_token(teacher, fam.seq_len) / 3  # teacher: forward only
    row = {"student": s_name, "teacher": t_name, "student_params": count_params(student).total,
           "teacher_params": count_params(teacher).total, "default_chunk_size": default,
           "flops_per_token": fpt, "methods": {}}
    for k, ts in times.items():
        med = statistics.median(ts)
        row["methods"][k] = {"median_step_s": med, "tokens_per_s": tokens / med,
                             "steps": len(ts), "fraction_of_peak": tokens / med * fpt / args.peak,
                             "ratio_over_reference": statistics.median(times["reference"]) / med}
    row["ratio_ours_over_reference"] = row["methods"][f"ours_chunk{default}"]["ratio_over_reference"]
    row["ours_fraction_of_peak"] = row["methods"][f"ours_chunk{default}"]["fraction_of_peak"]
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--family", default="pythia-micro")
    p.add_argument("--pairs", default="T0:T2,T1:T3", help="student:teacher,...")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--steps", type=int, default=2, help="steps per method per repeat")
    p.add_argument("--chunks", default="1024,4096",
                   help="chunk sizes to time besides the default (4096 rows = one chunk)")
    p.add_argument("--out", type=Path, default=Path("bench/results/distill_throughput.json"))
    args = p.parse_args()
    args.chunks = [int(c) for c in args.chunks.split(",") if c]
    threads = int(os.environ.get("CAPGAP_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    fam = load_family(args.family)
    args.peak = matmul_peak()
    rows = []
    for pair in args.pairs.split(","):
        s_name, t_name = pair.split(":")
        row = bench_pair(fam, s_name, t_name, args)
        rows.append(row)
        others = ", ".join(f"{k} {m['ratio_over_reference']:.3f}"
                           for k, m in row["methods"].items() if k != "reference")
        print(f"{s_name} <- {t_name}: reference "
              f"{row['methods']['reference']['tokens_per_s']:,.0f} tok/s; ours/reference: "
              f"{others}; ours at {100 * row['ours_fraction_of_peak']:.0f}% of matmul peak")
    out = {"what": "distillation optimiser-step throughput, ours vs plain PyTorch",
           "family": args.family, "vocab": args.vocab, "batch": args.batch,
           "seq_len": fam.seq_len, "dtype": "fp32", "threads": threads,
           "repeats": args.repeats, "steps_per_repeat": args.steps, "torch": torch.__version__,
           "cpu": platform.processor() or platform.machine(), "matmul_peak_flops_per_s": args.peak,
           "loss": "0.5 CE + 0.5 soft CE, temperature 1", "pairs": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"matmul peak {args.peak / 1e9:.1f} GFLOP/s; wrote {args.out}")


if __name__ == "__main__":
    main()
