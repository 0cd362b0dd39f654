"""SIGKILL a real ``capgap distill`` process mid-checkpoint; ``--resume`` must end bitwise
where an uninterrupted run ends (fp32, one thread). The resume and the reference run in the
test process (one interpreter start less); the killed run is a real subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_engine import save_tiny

from capgap import config
from capgap.cli import main
from capgap.distill.engine import DistillConfig, distill

SETTINGS = """\
data: {{corpus: {corpus}, seq_len: 32}}
objective: {{alpha: 0.5}}
train: {{tokens: 4096, micro_batch_size: 8, checkpoint_every: 6, keep_checkpoints: 1,
        eval_tokens: 256, threads: 1, precision: fp32}}
eval: {{max_bytes: 2000}}
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_tokenizer, tiny_corpus) -> Path:
    root = tmp_path_factory.mktemp("distill-kill")
    (root / "corpus.txt").write_text("\n\n".join(d.text for d in tiny_corpus.documents))
    save_tiny(root / "teacher", tiny_tokenizer, 32, 2, 0)
    save_tiny(root / "student", tiny_tokenizer, 16, 1, 1)
    (root / "cfg.yaml").write_text(SETTINGS.format(corpus=root / "corpus.txt"))
    return root


def cli_args(root: Path, out: Path, *flags: str) -> list[str]:
    return ["distill", "--config", str(root / "cfg.yaml"), "--teacher", str(root / "teacher"),
            "--student", str(root / "student"), "--out", str(out), *flags]


@pytest.mark.slow
def test_sigkill_during_checkpoint_then_resume_equals_uninterrupted(setup):
    root = setup
    out, ckpts = root / "killed", root / "killed" / "checkpoints"
    env = {**os.environ, "CAPGAP_THREADS": "1", "CAPGAP_FAULT_CKPT_SLEEP": "30"}
    p = subprocess.Popen([sys.executable, "-m", "capgap", *cli_args(root, out)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()  # the first write sleeps too; wait until the second one is under way
    while not (ckpts.is_dir() and any(".step-00000012." in c.name for c in ckpts.iterdir())):
        assert p.poll() is None, p.communicate()[1][-2000:]
        assert time.time() - t0 < 120, "no checkpoint write started"
        time.sleep(0.02)
    p.kill()  # SIGKILL: no handler runs, the temporary folder stays behind
    p.wait()
    assert sorted(c.name for c in ckpts.iterdir() if not c.name.startswith(".")) == \
        ["step-00000006"]

    cfg = config.load(DistillConfig, root / "cfg.yaml", [f"teacher={root / 'teacher'}",
                                                         f"student={root / 'student'}"])
    ref = distill(cfg, root / "ref")  # uninterrupted, in this process, while nothing else runs
    assert main(cli_args(root, out, "--resume")) == 0  # the same command, in this process
    assert not any(c.name.endswith(".tmp") for c in ckpts.iterdir())
    a = load_file(str(Path(ref.model_dir) / "model.safetensors"))
    b = load_file(str(out / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
