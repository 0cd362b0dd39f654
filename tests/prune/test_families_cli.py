"""Each modern family end to end: ``capgap prune --allocation uniform`` to half the size, a
plain ``AutoModelForCausalLM.from_pretrained`` reload, and its logits against the masked
original (the reference a pruned model must reproduce)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch.testing import assert_close
from transformers import AutoModelForCausalLM

from capgap.cli import main
from capgap.models.arch import adapter_for
from capgap.models.params import count_params
from capgap.prune import KeepPlan, MaskSet, attach
from tests.prune.conftest import VOCAB, tiny_model
from tests.prune.test_io import tiny_tokenizer

FAMILIES = ("llama3", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:  # noqa: ANN001
    g = torch.Generator().manual_seed(0)
    words = torch.randint(2, VOCAB, (3000,), generator=g).tolist()
    path = tmp_path_factory.mktemp("families") / "corpus.txt"
    path.write_text("\n\n".join(" ".join(f"w{w}" for w in words[i : i + 300]) for i in range(0, 3000, 300)))
    return path


@pytest.mark.parametrize("arch", FAMILIES)
def test_prunes_to_half_reloads_with_plain_transformers_and_matches_masked(arch: str, corpus: Path, tmp_path: Path) -> None:
    teacher = tiny_model(arch, dtype=torch.float32)
    teacher.save_pretrained(tmp_path / "teacher")
    tiny_tokenizer().save_pretrained(tmp_path / "teacher")
    out = tmp_path / "half"
    assert main(["prune", str(tmp_path / "teacher"), "--out", str(out), "--sparsity", "0.5",
                 "--allocation", "uniform", "--corpus", str(corpus), "--calib-tokens", "256",
                 "--batch-size", "4", "--seq-len", "16"]) == 0
    student = AutoModelForCausalLM.from_pretrained(out).eval()  # vanilla: no capgap, no remote code
    assert type(student) is type(teacher)
    before, after = count_params(teacher).total, count_params(student).total
    assert 0.4 * before <= after <= 0.6 * before
    plan = KeepPlan.from_dict(json.loads((out / "prune_plan.json").read_text())["plan"])
    assert plan.d < adapter_for(teacher).geometry(teacher).hidden  # width really pruned
    tokens = torch.randint(0, VOCAB, (2, 12), generator=torch.Generator().manual_seed(7))
    with torch.no_grad(), attach(teacher, MaskSet.from_plan(plan, adapter_for(teacher).geometry(teacher))):
        masked = teacher(tokens).logits
    with torch.no_grad():
        logits = student(tokens).logits
    assert_close(logits, masked, rtol=1e-4, atol=1e-5)
