"""Wall time of the main job: a first ``capgap pilot`` from scratch, then a re-run from cache.

The targets on 2 cores (installation excluded): first run <= 15 min, re-run <= 1 min.
Each run is a fresh subprocess with a fresh capgap cache for the first run, so tokenizer
training and tokenisation are counted. Writes JSON.

    python bench/pilot_time.py [--preset pilot] [--out bench/results/pilot_time.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    return time.perf_counter() - t0, proc.returncode, proc.stdout[-4000:] + proc.stderr[-2000:]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--preset", default="pilot")
    p.add_argument("--out", type=Path, default=Path("bench/results/pilot_time.json"))
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="capgap-pilot-bench-"))
    env = {**os.environ, "CAPGAP_CACHE": str(work / "cache")}
    cmd = [sys.executable, "-m", "capgap", "pilot", "--preset", args.preset,
           "--out", str(work / "pilot")]
    first, rc1, log1 = timed(cmd, env)
    again, rc2, log2 = timed(cmd, env)
    result = {"preset": args.preset, "cores": os.cpu_count(), "python": platform.python_version(),
              "first_run_s": round(first, 1), "rerun_s": round(again, 1),
              "first_run_ok": rc1 == 0, "rerun_ok": rc2 == 0,
              "targets_s": {"first_run": 900, "rerun": 60}, "tail": log2[-3000:]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"first run {first / 60:.1f} min (rc {rc1}), re-run {again:.1f} s (rc {rc2}); "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
