"""``torchrun --nproc_per_node 2 -m capgap distill`` over gloo: FSDP2 really shards the student,
DDP replicates it, and both follow the one-process loss curve at the same global batch; FSDP
checkpoints are sharded (every rank writes its own part) and resume exactly."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

from capgap import config
from capgap.distill.engine import DistillConfig, distill
from capgap.runs import RunDir

SETTINGS = """\
data: {{corpus: {corpus}, seq_len: 32}}
objective: {{alpha: 0.5}}
train: {{tokens: 1536, micro_batch_size: 8, eval_tokens: 256, threads: 1, precision: fp32,
        checkpoint_every: 1, keep_checkpoints: 5, optim: {{lr: 0.003, warmup_frac: 0.2}}}}
eval: {{max_bytes: 2000}}
"""


def save_tiny(path: Path, tokenizer, hidden: int, layers: int, seed: int) -> Path:  # noqa: ANN001
    torch.manual_seed(seed)
    cfg = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=hidden // 16, intermediate_size=4 * hidden,
                        max_position_embeddings=64, rotary_pct=0.25,
                        eos_token_id=tokenizer.eos_token_id, bos_token_id=tokenizer.bos_token_id)
    GPTNeoXForCausalLM(cfg).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer, tiny_corpus) -> Path:
    """Tiny teacher/student, a config, and the one-process reference run."""
    root = tmp_path_factory.mktemp("dist")
    (root / "corpus.txt").write_text("\n\n".join(d.text for d in tiny_corpus.documents))
    save_tiny(root / "teacher", tiny_tokenizer, 32, 2, 0)
    save_tiny(root / "student", tiny_tokenizer, 32, 2, 1)
    (root / "cfg.yaml").write_text(SETTINGS.format(corpus=root / "corpus.txt"))
    cfg = config.load(DistillConfig, root / "cfg.yaml", [f"teacher={root / 'teacher'}",
                                                         f"student={root / 'student'}"])
    distill(cfg, root / "one")
    return root


def torchrun(root: Path, out: Path, mode: str, *flags: str) -> list[dict]:
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "capgap", "distill", "--config", str(root / "cfg.yaml"),
            "--teacher", str(root / "teacher"), "--student", str(root / "student"),
            "--parallel", mode, "--out", str(out), *flags]
    env = {**os.environ, "CAPGAP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    return records(out)


def records(out: Path) -> list[dict]:
    return [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]


def losses(recs: list[dict]) -> list[float]:
    return [r["loss"] for r in recs if "event" not in r]


def check_same_run(root: Path, out: Path, recs: list[dict]) -> None:
    for r in (r for r in recs if "event" not in r):  # each rank trained on its own rows
        a, b = r["loss_by_rank"]
        assert a != b and r["loss"] == pytest.approx((a + b) / 2)
    ref = losses(records(root / "one"))
    assert len(ref) == 6 and ref[-1] < ref[0]  # the student learns
    torch.testing.assert_close(losses(recs), ref, rtol=1e-4, atol=0)
    a = load_file(str(root / "one" / "model" / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5)


@pytest.fixture(scope="module")
def fsdp_run(setup) -> list[dict]:
    return torchrun(setup, setup / "fsdp", "fsdp")


@pytest.mark.slow
def test_fsdp_shards_and_matches_one_process(setup, fsdp_run):
    recs = fsdp_run
    (par,) = [r for r in recs if r.get("event") == "parallel"]
    assert par["mode"] == "fsdp" and par["world"] == 2
    assert par["dtensor_params"] == par["n_params"]  # every parameter is a DTensor
    assert sum(par["local_params"]) == par["params"]
    for local in par["local_params"]:  # each rank holds about half of every tensor
        assert abs(local - par["params"] / 2) <= 0.05 * par["params"]
    check_same_run(setup, setup / "fsdp", recs)


@pytest.mark.slow
def test_fsdp_checkpoints_are_sharded_and_resume_exactly(setup, fsdp_run):
    """Each rank wrote its own shard file (no full state on rank 0); a run cut back to its
    step-3 checkpoint and resumed on 2 ranks ends bitwise equal to the uninterrupted one."""
    ckpts = RunDir(setup / "fsdp", True, True).checkpoints()
    assert [c.name for c in ckpts] == [f"step-{s:08d}" for s in range(1, 6)]
    for c in ckpts:
        assert sorted(p.name for p in c.iterdir()) == [
            "rng-0.safetensors", "rng-1.safetensors", "shards", "state.json"]
        shards = sorted((c / "shards").iterdir())
        assert [p.suffix for p in shards] == [".safetensors"] * 2  # one per rank, no pickle
    cut = setup / "fsdp-resumed"
    shutil.copytree(setup / "fsdp", cut)
    for name in ("DONE.json", "model", *(c.name for c in ckpts[3:])):
        p = cut / name if name in ("DONE.json", "model") else cut / "checkpoints" / name
        shutil.rmtree(p) if p.is_dir() else p.unlink()
    recs = torchrun(setup, cut, "fsdp", "--resume")
    (resume,) = [r for r in recs if r.get("event") == "resume"]
    assert resume["step"] == 3 and resume["checkpoint"] == "step-00000003"
    assert losses(recs) == losses(fsdp_run)
    a = load_file(str(setup / "fsdp" / "model" / "model.safetensors"))
    b = load_file(str(cut / "model" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_ddp_replicates_and_matches_one_process(setup):
    recs = torchrun(setup, setup / "ddp", "ddp")
    (par,) = [r for r in recs if r.get("event") == "parallel"]
    assert par["mode"] == "ddp" and par["local_params"] == [par["params"]] * 2
    assert par["dtensor_params"] == 0
    check_same_run(setup, setup / "ddp", recs)


def test_collectives_wait_two_hours_unless_told(monkeypatch) -> None:
    from datetime import timedelta

    from capgap.errors import CapgapError
    from capgap.train.distributed import collective_timeout

    monkeypatch.delenv("CAPGAP_DIST_TIMEOUT_MIN", raising=False)
    assert collective_timeout() == timedelta(hours=2)
    monkeypatch.setenv("CAPGAP_DIST_TIMEOUT_MIN", "30")
    assert collective_timeout() == timedelta(minutes=30)
    for bad in ("0", "soon"):
        monkeypatch.setenv("CAPGAP_DIST_TIMEOUT_MIN", bad)
        with pytest.raises(CapgapError, match="CAPGAP_DIST_TIMEOUT_MIN"):
            collective_timeout()


def test_a_joined_group_keeps_its_device_kind(monkeypatch, tmp_path) -> None:
    """distill joins a gloo group on CPU; train()'s own setup() on a GPU host must not then
    move the model to CUDA (NCCL collectives on a gloo group)."""
    import torch.distributed as dist

    from capgap.train.distributed import setup as par_setup

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0,
                            world_size=1)
    try:
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        par = par_setup("ddp")
        assert par.device.type == "cpu" and par.rank == 0
    finally:
        dist.destroy_process_group()
