"""End to end: pretrain a tiny family -> eval; and SIGKILL + --resume equals uninterrupted."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from capgap.cli import main

FAMILY = """\
name: tiny
arch: gpt_neox
seq_len: 32
vocab_size: 320
defaults: {head_dim: 16, rotary_pct: 0.25, use_parallel_residual: true}
sizes:
  - {name: A, hidden: 16, layers: 1}
  - {name: B, hidden: 32, layers: 2}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Path:
    from capgap.data import load_corpus

    root = tmp_path_factory.mktemp("pretrain")
    texts, n = [], 0
    for t in load_corpus().train_texts():  # a ~200 KB slice of the embedded corpus
        texts.append(t)
        n += len(t)
        if n > 200_000:
            break
    (root / "corpus.txt").write_text("\n\n".join(texts))
    (root / "family.yaml").write_text(FAMILY)
    (root / "cfg.yaml").write_text(
        f"family: {root / 'family.yaml'}\n"
        f"data: {{corpus: {root / 'corpus.txt'}, vocab_size: 320}}\n"
        "train: {tokens: 40960, micro_batch_size: 8, checkpoint_every: 20, eval_tokens: 512,"
        " keep_checkpoints: 2, threads: 1}\n"
        "eval: {max_bytes: 20000}\n")
    return root


def run_cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen:
    full = {**os.environ, "CAPGAP_THREADS": "1", **(env or {})}
    return subprocess.Popen([sys.executable, "-m", "capgap", *args], env=full,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def weights(out: Path, size: str = "B") -> dict[str, torch.Tensor]:
    return load_file(str(out / size / "model" / "model.safetensors"))


def test_pretrain_then_eval(setup, capsys):
    out = setup / "e2e"
    assert main(["pretrain", "--config", str(setup / "cfg.yaml"), "--out", str(out),
                 "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == ["A", "B"]
    assert all(r["val_loss"] < 5.77 for r in rows)  # ln(320): better than uniform guessing
    assert (out / "DONE.json").exists() and (out / "B" / "metrics.jsonl").exists()
    assert main(["eval", str(out / "B" / "model"), "--corpus", str(setup / "corpus.txt"),
                 "--max-bytes", "20000", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert {"loss", "ppl", "bpb", "tokens"} <= set(res)
    assert res["loss"] == pytest.approx(rows[1]["val_loss"], rel=1e-6)  # same text, same model
    # A finished run is refused without a flag, skipped with --resume.
    assert main(["pretrain", "--config", str(setup / "cfg.yaml"), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def _wait_for(pred, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0 = time.time()
    while not pred():
        if proc.poll() is not None:
            raise AssertionError(f"process ended early: {proc.communicate()[1][-2000:]}")
        if time.time() - t0 > timeout:
            raise AssertionError("timed out waiting")
        time.sleep(0.02)


@pytest.mark.slow
def test_sigkill_resume_equals_uninterrupted(setup):
    cfg = str(setup / "cfg.yaml")
    ref = setup / "ref"
    p = run_cli(["pretrain", "--config", cfg, "--out", str(ref)])
    assert p.wait() == 0, p.communicate()[1][-2000:]

    out = setup / "killed"
    ckpts = out / "B" / "checkpoints"
    slow = {"CAPGAP_FAULT_CKPT_SLEEP": "1.0"}  # checkpoints take >= 1 s: a wide window

    # Kill 1: between checkpoints, after size B has written its first one.
    p = run_cli(["pretrain", "--config", cfg, "--out", str(out)], slow)
    _wait_for(lambda: (ckpts / "step-00000020").is_dir(), p)
    p.kill()
    p.wait()
    # Kill 2: while a checkpoint is being written (its temporary folder exists).
    p = run_cli(["pretrain", "--config", cfg, "--out", str(out), "--resume"], slow)
    _wait_for(lambda: ckpts.is_dir() and any(c.name.endswith(".tmp") and
                                             "step-00000040" in c.name
                                             for c in ckpts.iterdir()), p)
    p.kill()
    p.wait()
    assert not (out / "B" / "DONE.json").exists()
    p = run_cli(["pretrain", "--config", cfg, "--out", str(out)])
    assert p.wait() == 2 and "--resume" in p.communicate()[1]
    p = run_cli(["pretrain", "--config", cfg, "--out", str(out), "--resume"])
    assert p.wait() == 0, p.communicate()[1][-2000:]

    a, b = weights(ref), weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_tokens_per_param_trains_each_size_on_its_own_budget_and_writes_the_regime(setup, tmp_path):
    from capgap import config
    from capgap.train.pretrain import PretrainConfig, pretrain

    cfg = config.load(PretrainConfig, setup / "cfg.yaml")
    cfg.tokens_per_param = 0.5
    out = tmp_path / "fam"
    results = pretrain(cfg, out)
    regime = json.loads((out / "regime.json").read_text())["teachers"]
    assert [t["name"] for t in regime] == ["A", "B"]
    step = 8 * 32  # rounded up to whole steps of micro_batch_size x seq_len
    for r, t in zip(results, regime, strict=True):
        assert r.train_tokens == -(-int(0.5 * r.params) // step) * step
        assert t["tokens"] == r.train_tokens and t["params"] == r.params
        assert t["tokens_per_param"] == pytest.approx(0.5, abs=step / r.params)
        assert t["embedding_fraction"] == pytest.approx(1 - r.params_non_embedding / r.params,
                                                        abs=1e-4)
        assert 0 < t["epochs"] == r.epochs
    assert results[0].train_tokens < results[1].train_tokens
    bad = PretrainConfig(tokens_per_param=-1)
    with pytest.raises(Exception, match="tokens_per_param must be >= 0"):
        config.checked(bad)
    moved = tmp_path / "elsewhere"  # a finished family copied away: its models are read there
    shutil.copytree(out, moved)
    again = pretrain(cfg, moved, resume=True)
    assert [Path(r.model_dir) for r in again] == [moved / r.name / "model" for r in results]
    assert [r.val_loss for r in again] == [r.val_loss for r in results]
    (moved / "DONE.json").unlink()  # the family unfinished, its sizes finished: the same
    again = pretrain(cfg, moved, resume=True)
    assert [Path(r.model_dir) for r in again] == [moved / r.name / "model" for r in results]
