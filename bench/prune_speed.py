"""Cost of pruning: the scoring pass vs a plain forward+backward, and materialisation time.

* Scoring ratio: seconds of ``capgap.prune.score`` over N batches divided by seconds of a
  plain forward + backward (weights requiring grad, ``loss.backward()``) over the *same*
  batches, measured in the same process, alternating, median of ``--repeats``. Target ≤ 1.3.
* Materialisation: seconds of ``prune(model, scores, sparsity=...)`` (allocation search +
  slicing; loading excluded) and of the ``materialize`` slice alone, for global and uniform
  allocations. Target: SmolLM2-135M in ≤ 10 s, measured on a same-shape random
  LlamaConfig (hidden 576, 30 layers, 9 heads / 3 KV heads, FFN 1536, vocab 49152).

    python bench/prune_speed.py                      # CPU, writes bench/results/prune_speed.json
    python bench/prune_speed.py --device cuda --batch-size 8 --seq-len 512
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from capgap.models.params import count_params
from capgap.prune import materialize, prune, score

OUT = Path(__file__).resolve().parent / "out" / "prune_speed.json"


def smollm2_shape(layers: int) -> LlamaForCausalLM:
    cfg = LlamaConfig(
        hidden_size=576, num_hidden_layers=layers, num_attention_heads=9, num_key_value_heads=3,
        intermediate_size=1536, vocab_size=49152, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=0, eos_token_id=0,
    )
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).eval()


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def plain_step(model: torch.nn.Module, batches: list[torch.Tensor], device: str) -> float:
    """Seconds of forward + backward (weight grads) over ``batches``."""
    model.requires_grad_(True)
    sync(device)
    start = time.perf_counter()
    for b in batches:
        model(input_ids=b, labels=b).loss.backward()
    sync(device)
    seconds = time.perf_counter() - start
    model.zero_grad(set_to_none=True)
    return seconds


def scoring(model: torch.nn.Module, batches: list[torch.Tensor], device: str) -> float:
    sync(device)
    start = time.perf_counter()
    score(model, batches)
    sync(device)
    return time.perf_counter() - start


def timed(fn, repeats: int) -> list[float]:  # noqa: ANN001
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--batches", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--sparsity", type=float, default=0.6)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()

    model = smollm2_shape(args.layers).to(args.device)
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 49152, (args.batch_size, args.seq_len), generator=g).to(args.device)
               for _ in range(args.batches)]
    plain_step(model, batches[:1], args.device)  # warm-up (allocator, kernels)
    scoring(model, batches[:1], args.device)
    plain, scored = [], []
    for _ in range(args.repeats):  # alternate so drift hits both equally
        plain.append(plain_step(model, batches, args.device))
        scored.append(scoring(model, batches, args.device))
    scores = score(model, batches)
    model.requires_grad_(True)

    mat: dict[str, dict] = {}
    for allocation in ("global", "uniform"):
        prune_s = timed(lambda a=allocation: prune(model, scores, sparsity=args.sparsity, allocation=a), args.repeats)
        result = prune(model, scores, sparsity=args.sparsity, allocation=allocation)
        slice_s = timed(lambda r=result, a=allocation: materialize(model, r.plan, a), args.repeats)
        mat[allocation] = {
            "prune_seconds_median": round(statistics.median(prune_s), 3),
            "materialize_only_seconds_median": round(statistics.median(slice_s), 3),
            "params_after": result.report["params_after"],
            "achieved_sparsity": result.report["achieved_sparsity"],
        }
    ratio = statistics.median(scored) / statistics.median(plain)
    report = {
        "model": f"random LlamaConfig SmolLM2-135M shape ({args.layers} layers)",
        "params": count_params(model).total,
        "device": args.device,
        "host": platform.node(),
        "threads": torch.get_num_threads(),
        "tokens_per_pass": args.batches * args.batch_size * args.seq_len,
        "plain_fwd_bwd_seconds": [round(s, 3) for s in plain],
        "scoring_seconds": [round(s, 3) for s in scored],
        "scoring_over_plain_ratio": round(ratio, 3),
        "scoring_target_ratio": 1.3,
        "materialize": mat,
        "materialize_target_seconds": 10.0,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
