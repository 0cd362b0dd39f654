"""MiniMA at laptop scale: SmolLM2-135M pruned to about half, distilled on CPU, and the same
pruned student trained on the same tokens without a teacher. Writes JSON.

Stages, each timed (wall seconds, this machine):
  1. ``capgap recipe minima --preset smollm2-half``: prune (scores + slicing) and distill
     (0.5 CE + 0.5 soft CE from the 135M teacher);
  2. the no-teacher baseline: ``capgap distill`` with the distillation run's own resolved
     config, but ``alpha = 1`` and no teacher: the same pruned student, the same mixture file,
     seed and optimizer, so both runs see identical tokens;
  3. ``capgap eval`` of teacher, pruned student, distilled student and baseline on the same
     held-out text of the embedded corpus (perplexity, nats/token, bits/byte).

Needs the converted teacher: ``capgap convert smollm2 --out models/smollm2-135m``. Resumes:
each stage skips what its folder already holds.

    python bench/minima_smollm2.py [--teacher models/smollm2-135m] [--tokens 200000]
        [--work runs/bench-minima] [--out bench/results/minima_smollm2.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml


def capgap(*args: str) -> float:
    """Run one capgap command (output streamed); return its wall seconds."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "capgap", *args])
    if proc.returncode != 0:
        sys.exit(f"bench: capgap {' '.join(args)} failed (exit {proc.returncode})")
    return time.perf_counter() - t0


def heldout(name: str, model: Path, max_bytes: int, seq_len: int, work: Path) -> dict:
    out = work / f"eval-{name}.json"
    if not out.is_file():
        capgap("eval", str(model), "--max-bytes", str(max_bytes), "--seq-len", str(seq_len),
               "--batch-size", "8", "--out", str(out))
    rows = json.loads(out.read_text())
    return rows[0] if isinstance(rows, list) else rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--teacher", type=Path, default=Path("models/smollm2-135m"))
    p.add_argument("--tokens", type=int, default=200_000,
                   help="distillation budget (200k: ~37 min at the ~90 tok/s measured here)")
    p.add_argument("--max-bytes", type=int, default=100_000,
                   help="held-out text scored for every model (the same bytes for all)")
    p.add_argument("--work", type=Path, default=Path("runs/bench-minima"))
    p.add_argument("--out", type=Path, default=Path("bench/results/minima_smollm2.json"))
    args = p.parse_args()
    if not (args.teacher / "config.json").is_file():
        sys.exit(f"bench: no teacher at {args.teacher}; run: capgap convert smollm2 --out "
                 f"{args.teacher}")
    common = ["--preset", "smollm2-half", "--teacher", str(args.teacher),
              "--tokens", str(args.tokens)]
    distilled, baseline = args.work / "distilled", args.work / "baseline"
    times = {}
    if not (distilled / "DONE.json").is_file():
        times["recipe_s"] = capgap("recipe", "minima", *common, "--out", str(distilled),
                                   *(["--resume", "--force"] if distilled.exists() else []))
    if not (baseline / "DONE.json").is_file():
        cfg = yaml.safe_load((distilled / "2-distill" / "config.yaml").read_text())
        cfg["teacher"] = None
        cfg["objective"]["alpha"] = 1.0
        cfg_path = args.work / "baseline.yaml"
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        times["baseline_s"] = capgap("distill", "--config", str(cfg_path), "--out",
                                     str(baseline),
                                     *(["--resume"] if baseline.exists() else []))
    record = json.loads((distilled / "recipe.json").read_text())
    base = json.loads((baseline / "DONE.json").read_text())["result"]
    stage = lambda rec, name: rec["stages"][name]  # noqa: E731
    seq_len = 256
    models = {"teacher": args.teacher,
              "pruned": distilled / "1-prune" / "model",
              "distilled": distilled / "2-distill" / "model",
              "baseline": baseline / "model"}
    evals = {k: heldout(k, v, args.max_bytes, seq_len, args.work) for k, v in models.items()}
    result = {
        "machine": {"cores": os.cpu_count(), "python": platform.python_version()},
        "teacher": str(args.teacher), "tokens": args.tokens, "heldout_bytes": args.max_bytes,
        "seq_len": seq_len, "shape": record.get("shape"),
        "models": {k: {"params": record.get("teacher_params") if k == "teacher"
                       else stage(record, "prune").get("params_after"),
                       **{m: evals[k].get(m) for m in ("loss", "ppl", "bpb", "tokens")}}
                   for k in models},
        "stage_seconds": {"prune": stage(record, "prune").get("seconds"),
                          "distill": stage(record, "distill").get("seconds"),
                          "baseline_train": base.get("seconds")},
        "distill_tokens_per_s": stage(record, "distill").get("tokens_per_s"),
        "baseline_tokens_per_s": base.get("tokens_per_s"),
        "invocation_seconds": times,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    for k, v in result["models"].items():
        print(f"{k:10s} ppl {v['ppl']:.2f}  loss {v['loss']:.4f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
