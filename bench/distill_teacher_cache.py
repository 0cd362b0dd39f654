"""Offline teacher cache: student quality with the cache vs the online teacher, and the
speed-up when several students share one teacher.

Setup (all on the embedded corpus, 4096-token BPE, seq 128, pythia-micro layout): a teacher
of pythia-micro T2 shape (hidden 128, 4 layers) pretrained here for ``--teacher-tokens``;
three students of hidden 32 / 48 / 64 (2 layers), randomly initialised, the same seed and
budget (so they visit the same windows and share one cache entry, as a sweep's students of
one teacher do). Each student is distilled twice with the paper's objective (0.5 CE + 0.5
soft CE): online and from the cache (top-k log-probs, fp16). Reported per student: held-out
val loss both ways and wall seconds of the whole ``distill()`` call; overall: the cache build
time and (sum of online walls) / (sum of cached walls, the first one including the build).

    python bench/distill_teacher_cache.py [--tokens 98304] [--top-k 64]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch

from capgap import config
from capgap.data.cache import cache_dir
from capgap.distill.cache import TeacherCacheConfig, fingerprint
from capgap.distill.engine import DistillConfig, ObjectiveConfig, distill
from capgap.evaluate.heldout import EvalConfig
from capgap.models import build_model, load_family, save_model
from capgap.models.anymodel import load_any_model
from capgap.train.loop import OptimConfig, TrainConfig
from capgap.train.pretrain import PretrainConfig, pretrain

FAMILY = """\
name: cache-bench
arch: gpt_neox
seq_len: 128
vocab_size: 4096
defaults: {head_dim: 16, ffn_mult: 4, rotary_pct: 0.25, use_parallel_residual: true,
           tie_word_embeddings: false}
sizes:
  - {name: S32, hidden: 32, layers: 2}
  - {name: S48, hidden: 48, layers: 2}
  - {name: S64, hidden: 64, layers: 2}
  - {name: T, hidden: 128, layers: 4}
"""
STUDENTS = ["S32", "S48", "S64"]


def make_teacher(root: Path, tokens: int) -> Path:
    """Pretrain the teacher once (resumable; reused by later runs of this benchmark)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "family.yaml").write_text(FAMILY)
    cfg = PretrainConfig(family=str(root / "family.yaml"), sizes=["T"],
                         train=TrainConfig(tokens=tokens, micro_batch_size=16,
                                           optim=OptimConfig(lr=2e-3, warmup_frac=0.02)),
                         eval=EvalConfig(max_bytes=200_000))
    pretrain(cfg, root / "teacher", resume=(root / "teacher").exists())
    return root / "teacher" / "T" / "model"


def make_students(root: Path, teacher: Path) -> dict[str, Path]:
    fam = load_family(root / "family.yaml")
    _, tok = load_any_model(teacher)
    out = {}
    for name in STUDENTS:
        torch.manual_seed(1)
        model = build_model(fam.build_config(name, vocab_size=len(tok),
                                             eos_token_id=tok.eos_token_id,
                                             bos_token_id=tok.bos_token_id))
        out[name] = save_model(model, tok, root / "students" / name, overwrite=True)
    return out


def drop_entries(teacher: Path) -> None:
    """Remove this teacher's cache entries so the first cached run pays for the build."""
    fp = fingerprint(load_any_model(teacher)[0])
    for entry in (cache_dir() / "teacher").glob("*"):
        meta = entry / "meta.json"
        if meta.exists() and json.loads(meta.read_text())["teacher"] == fp:
            shutil.rmtree(entry)


def run(student: Path, teacher: Path, out: Path, args: argparse.Namespace,
        cached: bool) -> dict:
    cfg = DistillConfig(
        student=str(student), teacher=str(teacher),
        objective=ObjectiveConfig(alpha=0.5),
        teacher_cache=TeacherCacheConfig(enabled=cached, top_k=args.top_k, dtype="fp16"),
        train=TrainConfig(tokens=args.tokens, micro_batch_size=16, eval_tokens=8192,
                          optim=OptimConfig(lr=2e-3)),
        eval=EvalConfig(max_bytes=200_000))
    cfg = config.from_dict(DistillConfig, config.to_dict(cfg))
    t0 = time.perf_counter()
    res = distill(cfg, out, overwrite=True)
    return {"val_loss": res.val_loss, "final_train_loss": res.final_train_loss,
            "wall_s": time.perf_counter() - t0, "train_s": res.seconds,
            "tokens_per_s": res.tokens_per_s}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--tokens", type=int, default=98_304, help="budget per student")
    p.add_argument("--teacher-tokens", type=int, default=196_608)
    p.add_argument("--top-k", type=int, default=64)
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "capgap-cache-bench",
                   help="teacher, students and run folders (kept: reruns reuse the teacher)")
    p.add_argument("--out", type=Path, default=Path("bench/results/distill_teacher_cache.json"))
    args = p.parse_args()
    threads = int(os.environ.get("CAPGAP_THREADS", os.cpu_count() or 1))
    torch.set_num_threads(threads)
    teacher = make_teacher(args.work, args.teacher_tokens)
    teacher_loss = json.loads((teacher.parent / "DONE.json").read_text())["result"]["val_loss"]
    students = make_students(args.work, teacher)
    rows = {name: {"online": run(path, teacher, args.work / "runs" / f"{name}-online", args,
                                 cached=False)} for name, path in students.items()}
    drop_entries(teacher)
    for name, path in students.items():
        rows[name]["cached"] = run(path, teacher, args.work / "runs" / f"{name}-cached", args,
                                   cached=True)
    entry = Path(json.loads((args.work / "runs" / "S32-cached" / "metrics.json").read_text())
                 ["teacher_cache"])
    meta = json.loads((entry / "meta.json").read_text())
    online = sum(r["online"]["wall_s"] for r in rows.values())
    cached = sum(r["cached"]["wall_s"] for r in rows.values())
    for name, r in rows.items():
        r["val_loss_delta"] = r["cached"]["val_loss"] - r["online"]["val_loss"]
        print(f"{name}: val loss online {r['online']['val_loss']:.4f}  cached "
              f"{r['cached']['val_loss']:.4f}  ({r['val_loss_delta']:+.4f}); wall "
              f"{r['online']['wall_s']:.0f} s -> {r['cached']['wall_s']:.0f} s")
    size = sum(f.stat().st_size for f in entry.iterdir())
    result = {
        "what": "teacher top-k cache vs online teacher, 3 students of one teacher",
        "teacher": {"shape": "hidden 128, 4 layers (pythia-micro T2)",
                    "pretrain_tokens": args.teacher_tokens,
                    "val_loss": teacher_loss},
        "students": "hidden 32/48/64, 2 layers, random init, same seed and budget",
        "tokens_per_student": args.tokens, "top_k": args.top_k, "logp_dtype": "fp16",
        "seq_len": 128, "vocab": meta["vocab"], "threads": threads,
        "cache_build_s": meta["build_seconds"], "cache_windows": meta["windows"],
        "cache_bytes": size, "rows": rows,
        "speedup_3_students": online / cached,
        "speedup_3_students_excluding_build": online / (cached - meta["build_seconds"]),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"cache build {meta['build_seconds']:.1f} s ({size / 2**20:.1f} MiB); "
          f"3 students: {online:.0f} s online vs {cached:.0f} s cached "
          f"= {online / cached:.2f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
