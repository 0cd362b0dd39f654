"""A tiny sweep, run once per session: 2 teachers x 1 student size, 4 cells of 2k tokens."""

from __future__ import annotations

from pathlib import Path

import pytest

FAMILY = """\
name: tiny
arch: gpt_neox
seq_len: 32
vocab_size: 320
defaults: {head_dim: 16, rotary_pct: 0.25, use_parallel_residual: true}
sizes:
  - {name: A, hidden: 32, layers: 2}
  - {name: B, hidden: 48, layers: 2}
"""

STUDENT = 30_000  # 2/3 of A (~45k params), 1/3 of B (~85k)


def sweep_yaml(root: Path, **extra: str) -> str:
    """The tiny sweep config; ``extra`` replaces top-level keys (YAML flow text)."""
    keys = {
        "teachers": f"{{pretrain: {{family: {root / 'family.yaml'}, "
                    f"data: {{corpus: {root / 'corpus.txt'}, vocab_size: 320}}, "
                    "train: {tokens: 8192, micro_batch_size: 8, eval_tokens: 512, threads: 1}, "
                    "eval: {max_bytes: 5000}}}",
        "students": f"{{sizes: [{STUDENT}]}}",
        "tokens": "[2048]",
        "data": f"{{corpus: {root / 'corpus.txt'}}}",
        "train": "{micro_batch_size: 8, eval_tokens: 512, threads: 1}",
        "eval": "{max_bytes: 5000}",
        "scoring": "{tokens: 2048, batch_size: 8}",
        "law_bootstrap": "50",
        **extra,
    }
    return "".join(f"{k}: {v}\n" for k, v in keys.items())


@pytest.fixture(scope="session")
def sweep_root(tmp_path_factory) -> Path:
    """Family YAML, a ~100 KB corpus and the sweep config in one folder."""
    from capgap.data import load_corpus

    root = tmp_path_factory.mktemp("sweep")
    texts, n = [], 0
    for t in load_corpus().train_texts():
        texts.append(t)
        n += len(t)
        if n > 100_000:
            break
    (root / "corpus.txt").write_text("\n\n".join(texts))
    (root / "family.yaml").write_text(FAMILY)
    (root / "sweep.yaml").write_text(sweep_yaml(root))
    return root


@pytest.fixture(scope="session")
def sweep_cfg(sweep_root):
    from capgap import config
    from capgap.sweep import SweepConfig

    return config.load(SweepConfig, sweep_root / "sweep.yaml")


@pytest.fixture(scope="session")
def finished_sweep(sweep_root, sweep_cfg) -> tuple[Path, object]:
    """The tiny sweep run once with one worker: (folder, summary)."""
    from capgap.sweep import run_sweep

    out = sweep_root / "run"
    return out, run_sweep(sweep_cfg, out, workers=1, progress=False)
