"""Peak memory of one distillation step (forward + backward): naive full logits vs chunked.

Each measurement runs in a fresh child process (peak RSS is per process and never goes down):
the child builds a small-bodied student and teacher with a large vocabulary, so the [B, T, V]
logits dominate, records its peak RSS after model construction (baseline), runs one step and
records its peak RSS again (``ru_maxrss``). On CUDA it uses ``torch.cuda.max_memory_allocated``
instead. Reported: raw peaks, delta = step peak - baseline, and chunked/naive ratios of deltas.

    python bench/distill_memory.py                       # all cases, table + bench/results/distill_memory.json
    python bench/distill_memory.py --child --mode naive  # one measurement, prints one JSON line
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

OUT = Path(__file__).resolve().parent / "out" / "distill_memory.json"
CASES = [  # (architecture, vocabulary): GPT-2's real vocab and a LLaMA-style 32k one
    ("gpt2", 50257),
    ("llama", 32768),
]
MODES = [("naive", None), ("chunked", 1024), ("chunked", 256)]
MIB = 2**20


def build(arch: str, hidden: int, vocab: int, seed: int):  # noqa: ANN201 -> a causal LM
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    if arch == "gpt2":
        cfg = GPT2Config(n_embd=hidden, n_layer=2, n_head=2, vocab_size=vocab, n_positions=1024,
                         bos_token_id=0, eos_token_id=0)
        return GPT2LMHeadModel(cfg)
    cfg = LlamaConfig(hidden_size=hidden, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, intermediate_size=2 * hidden, vocab_size=vocab,
                      max_position_embeddings=1024, bos_token_id=0, eos_token_id=0)
    return LlamaForCausalLM(cfg)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def child(args: argparse.Namespace) -> None:
    """One measurement in this (fresh) process; prints a JSON line."""
    import torch

    from capgap.distill import distill_loss, naive_distill_loss

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    student = build(args.arch, args.student_hidden, args.vocab, seed=1).to(device).train()
    teacher = build(args.arch, args.teacher_hidden, args.vocab, seed=2).to(device).eval()
    teacher.requires_grad_(False)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), device=device)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / MIB
    else:
        base = peak_rss_mib()
    start = time.perf_counter()
    if args.mode == "naive":
        out = naive_distill_loss(student, teacher, ids)
    else:
        out = distill_loss(student, teacher, ids, chunk_size=args.chunk_size)
    out.loss.backward()
    loss = out.loss.detach()
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated() / MIB if cuda else peak_rss_mib()
    print(json.dumps({
        "metric": "cuda_max_memory_allocated" if cuda else "ru_maxrss",
        "baseline_mib": round(base, 1), "peak_mib": round(peak, 1),
        "delta_mib": round(peak - base, 1), "step_s": round(seconds, 2),
        "loss": round(loss.item(), 4), "n_tokens": out.n_tokens,
    }))


def run_child(args: argparse.Namespace, arch: str, vocab: int, mode: str, chunk: int | None) -> dict:
    cmd = [sys.executable, __file__, "--child", "--mode", mode, "--arch", arch,
           "--vocab", str(vocab), "--batch", str(args.batch), "--seq", str(args.seq),
           "--student-hidden", str(args.student_hidden), "--teacher-hidden", str(args.teacher_hidden),
           "--threads", str(args.threads), "--device", args.device]
    if chunk is not None:
        cmd += ["--chunk-size", str(chunk)]
    env = dict(os.environ, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"child failed ({' '.join(cmd)}):\n{proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"arch": arch, "vocab": vocab, "mode": mode, "chunk_size": chunk, **result}


def parent(args: argparse.Namespace) -> None:
    from capgap.io import write_json

    rows = []
    for arch, vocab in CASES:
        for mode, chunk in MODES:
            rows.append(run_child(args, arch, vocab, mode, chunk))
            print(f"  measured {arch} V={vocab} {mode} chunk={chunk}", file=sys.stderr)
    naive = {(r["arch"], r["vocab"]): r for r in rows if r["mode"] == "naive"}
    for r in rows:
        ref = naive[(r["arch"], r["vocab"])]
        r["delta_ratio_vs_naive"] = round(r["delta_mib"] / ref["delta_mib"], 3)
        r["peak_ratio_vs_naive"] = round(r["peak_mib"] / ref["peak_mib"], 3)
        r["fp32_logits_mib"] = round(args.batch * args.seq * r["vocab"] * 4 / MIB, 1)
    report = {
        "what": "peak memory of one forward+backward distillation step, fresh process per row",
        "batch": args.batch, "seq": args.seq, "student_hidden": args.student_hidden,
        "teacher_hidden": args.teacher_hidden, "threads": args.threads, "device": args.device,
        "target": "chunked delta <= 0.5 x naive delta", "rows": rows,
    }
    write_json(args.out, report)
    print(f"B*T = {args.batch}x{args.seq}; one fp32 [B,T,V] logits tensor = fp32_logits MiB")
    print(f"{'arch':6} {'vocab':>6} {'mode':8} {'chunk':>5} {'base':>7} {'peak':>7} {'delta':>7} "
          f"{'ratio':>6} {'logits':>7} {'step_s':>6}")
    for r in rows:
        print(f"{r['arch']:6} {r['vocab']:>6} {r['mode']:8} {r['chunk_size'] or '-':>5} "
              f"{r['baseline_mib']:>7.0f} {r['peak_mib']:>7.0f} {r['delta_mib']:>7.0f} "
              f"{r['delta_ratio_vs_naive']:>6.3f} {r['fp32_logits_mib']:>7.0f} {r['step_s']:>6.2f}")
    print(f"wrote {args.out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", action="store_true", help="run one measurement (internal)")
    p.add_argument("--mode", choices=["naive", "chunked"], default="chunked")
    p.add_argument("--arch", choices=["gpt2", "llama"], default="gpt2")
    p.add_argument("--vocab", type=int, default=50257)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--student-hidden", type=int, default=64)
    p.add_argument("--teacher-hidden", type=int, default=128)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    if args.child:
        child(args)
    else:
        parent(args)


if __name__ == "__main__":
    main()
