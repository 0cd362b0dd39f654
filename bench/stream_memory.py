"""Peak memory and throughput: a streamed token store against the in-memory path, same text.

The in-memory path (``load_corpus`` -> ``TokenStore``) holds every document as a Python
string; ``capgap data stream`` reads the source lazily and writes the packed streams as it
goes. Each variant runs in its own process on the same JSONL (the embedded corpus repeated
``--copies`` times, each copy with its own document ids), with the same trained 4096-token
BPE, and reports its peak resident memory (``ru_maxrss``) and tokens/s. Writes JSON.

    python bench/stream_memory.py [--copies 4]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from pathlib import Path
from capgap.data import TokenStore, load_corpus
from capgap.data.stream import StreamSource, stream_store
from capgap.data.tokenizer import load_tokenizer

mode, source, tok_dir, cache = sys.argv[1:5]
tok = load_tokenizer(tok_dir)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
if mode == "memory":
    store = TokenStore.build_or_load(load_corpus(source), tok, cache=Path(cache))
    tokens = int(store.meta["train_tokens"] + store.meta["val_tokens"])
else:
    path = stream_store([StreamSource(source)], tok, 10**12, cache=Path(cache))
    meta = json.loads((path / "meta.json").read_text())
    tokens = int(meta["train_tokens"] + meta["val_tokens"])
seconds = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"mode": mode, "tokens": tokens, "seconds": seconds,
                  "tokens_per_s": tokens / seconds, "peak_rss_mb": peak / 1024,
                  "rss_growth_mb": (peak - base) / 1024}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--copies", type=int, default=4, help="copies of the embedded corpus")
    p.add_argument("--out", type=Path, default=Path("bench/results/stream_memory.json"))
    args = p.parse_args()
    from capgap.data import get_tokenizer, load_corpus

    corpus = load_corpus()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        source = root / "big.jsonl"
        with open(source, "w", encoding="utf-8") as f:
            for c in range(args.copies):
                for d in corpus.documents:
                    f.write(json.dumps({"id": f"{c}-{d.id}", "text": d.text}) + "\n")
        tok = get_tokenizer(corpus, 4096, cache=root / "tok-cache")
        tok.save_pretrained(root / "tok")
        runs = []
        for mode in ("memory", "stream"):
            out = subprocess.run([sys.executable, "-c", CHILD, mode, str(source), str(root / "tok"),
                                  str(root / f"cache-{mode}")], check=True, capture_output=True,
                                 text=True, env=os.environ | {"CAPGAP_NO_PROGRESS": "1"})
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(runs[-1])
        size_mb = source.stat().st_size / 2**20
    mem, stream = runs
    result = {"source_mb": size_mb, "copies": args.copies, "runs": runs,
              "rss_growth_ratio_stream_vs_memory": stream["rss_growth_mb"] / mem["rss_growth_mb"],
              "speed_ratio_stream_vs_memory": stream["tokens_per_s"] / mem["tokens_per_s"],
              "note": "each variant in its own process; peak RSS from ru_maxrss",
              "when": time.strftime("%Y-%m-%d %H:%M"), "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"{size_mb:.0f} MB source: RSS growth {mem['rss_growth_mb']:.0f} MB in memory, "
          f"{stream['rss_growth_mb']:.0f} MB streamed; streamed speed "
          f"{result['speed_ratio_stream_vs_memory']:.2f}x; wrote {args.out}")


if __name__ == "__main__":
    main()
