"""Test-wide settings: offline, private caches, deterministic threads."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Set before transformers/huggingface_hub are imported anywhere.
_TMP = tempfile.mkdtemp(prefix="capgap-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_HOME"] = os.path.join(_TMP, "hf")
os.environ.setdefault("CAPGAP_CACHE", os.path.join(_TMP, "cache"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

torch.set_num_threads(1)


# --- shared tiny data (capgap.data) --------------------------------------------------------
# Session-scoped so every test package can reuse one ~110 KB corpus, a 300-token BPE and its
# packed streams (built in about a second) instead of touching the full embedded corpus.

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_corpus():
    """~110 KB slice of the embedded corpus: 1000 characters from the middle of each work."""
    from capgap.data import Corpus, Document, load_corpus

    docs = [
        Document(d.id, d.text[len(d.text) // 2 : len(d.text) // 2 + 1000])
        for d in load_corpus().documents
    ]
    return Corpus(docs, name="tiny", val_fraction=0.1, chunk_chars=512)


@pytest.fixture(scope="session")
def tiny_tokenizer(tiny_corpus, tmp_path_factory):
    """300-token byte-level BPE trained on ``tiny_corpus`` (a Hugging Face tokenizer)."""
    from capgap.data import get_tokenizer

    return get_tokenizer(tiny_corpus, 300, cache=tmp_path_factory.mktemp("tiny-data-cache"))


@pytest.fixture(scope="session")
def tiny_token_store(tiny_corpus, tiny_tokenizer, tmp_path_factory):
    """``tiny_corpus`` packed with ``tiny_tokenizer``: ``.train`` / ``.val`` uint16 memmaps."""
    from capgap.data import TokenStore

    cache = tmp_path_factory.mktemp("tiny-token-cache")
    return TokenStore.build_or_load(tiny_corpus, tiny_tokenizer, cache=cache)


# --- a tiny sweep (capgap.sweep, capgap.study) ----------------------------------------------
# 2 teachers x 1 student size, 4 cells of 2k tokens; its teachers are trained once per session
# for the sweep and study tests alike.

SWEEP_FAMILY = """\
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
    (root / "family.yaml").write_text(SWEEP_FAMILY)
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
