"""Pretraining throughput per size of a family, against this machine's measured matmul peak.

For each size: tokens/s of full training steps (forward, backward, AdamW) on random tokens
with the loss pretraining uses (capgap's chunked head loss), the model FLOP/s that implies
(6 x matmul weights + attention, per token), and that as a fraction of the peak fp32 matmul
FLOP/s measured in the same run. The same steps with Hugging Face's own loss (full-vocabulary
logits) run beside them as the reference: ``speedup_vs_hf_loss`` is the ratio. Writes JSON.

    python bench/pretrain_throughput.py [--family pythia-micro] [--steps 20]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from capgap.models import build_model, load_family
from capgap.models.params import count_params
from capgap.train.loop import OptimConfig, matmul_flops_per_token, param_groups
from capgap.train.loss import lm_loss


def matmul_peak(n: int = 1024, repeats: int = 20) -> float:
    """Best observed fp32 FLOP/s of an n x n matmul on all threads."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    best = 0.0
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = max(best, 2 * n**3 / (time.perf_counter() - t))
    return best


def hf_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model(input_ids=x, labels=x).loss


def chunked_loss(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    return lm_loss(model, x).loss


def step_rate(model: torch.nn.Module, batch: int, seq: int, vocab: int, steps: int,
              loss_fn: Callable[[torch.nn.Module, torch.Tensor], torch.Tensor]) -> float:
    """Tokens/s of full optimizer steps after two warm-up steps."""
    o = OptimConfig()
    opt = torch.optim.AdamW(param_groups(model, o.weight_decay), lr=1e-4, foreach=False)
    x = torch.randint(0, vocab, (batch, seq))
    model.train()
    times = []
    for i in range(steps + 2):
        t = time.perf_counter()
        loss_fn(model, x).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t)
    times.sort()
    return batch * seq / times[len(times) // 2]  # median step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--family", default="pythia-micro")
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", type=Path, default=Path("bench/results/pretrain_throughput.json"))
    args = p.parse_args()
    threads = int(os.environ.get("CAPGAP_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    fam = load_family(args.family)
    peak = matmul_peak()
    rows = []
    for size in fam.sizes:
        torch.manual_seed(0)
        model = build_model(fam.build_config(size.name, vocab_size=args.vocab))
        n = count_params(model)
        tok_s = step_rate(model, args.batch, fam.seq_len, args.vocab, args.steps, chunked_loss)
        ref = step_rate(model, args.batch, fam.seq_len, args.vocab, args.steps, hf_loss)
        fpt = matmul_flops_per_token(model, fam.seq_len)
        rows.append({"size": size.name, "params": n.total, "params_non_embedding": n.non_embedding,
                     "tokens_per_s": tok_s, "hf_loss_tokens_per_s": ref,
                     "speedup_vs_hf_loss": tok_s / ref, "flops_per_token": fpt,
                     "model_flops_per_s": tok_s * fpt, "fraction_of_peak": tok_s * fpt / peak})
        print(f"{size.name}: {n.total / 1e6:.2f}M params  {tok_s:,.0f} tok/s  "
              f"{tok_s * fpt / 1e9:.1f} GFLOP/s  {100 * tok_s * fpt / peak:.0f}% of peak  "
              f"({tok_s / ref:.2f}x the HF-loss step)")
    out = {"family": args.family, "vocab": args.vocab, "batch": args.batch, "seq_len": fam.seq_len,
           "threads": threads, "loss": "capgap.train.loss.lm_loss (as pretraining)",
           "torch": torch.__version__, "cpu": platform.processor() or
           platform.machine(), "matmul_peak_flops_per_s": peak, "sizes": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"matmul peak {peak / 1e9:.1f} GFLOP/s; wrote {args.out}")


if __name__ == "__main__":
    main()
