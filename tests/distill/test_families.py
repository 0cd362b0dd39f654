"""Each modern family through the rest of the pipeline: its half-size uniform student is
distilled from its teacher, then scored by ``capgap eval`` and by lm-evaluation-harness."""

from __future__ import annotations

import json
import math

import pytest
import torch
from transformers import AutoModelForCausalLM

from capgap.cli import main
from capgap.distill.engine import distill
from capgap.prune import prune, save_pruned, score
from tests.distill.test_engine import cfg_for
from tests.prune.conftest import tiny_config

FAMILIES = ("llama3", "qwen3", "gemma2", "gemma3_text", "phi3", "olmo2")


@pytest.mark.parametrize("arch", FAMILIES)
def test_student_of_each_family_distills_and_evaluates(arch: str, tiny_tokenizer, tiny_corpus, tmp_path, capsys) -> None:  # noqa: ANN001
    tok = tiny_tokenizer
    config = tiny_config(arch, vocab_size=len(tok), max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    teacher = AutoModelForCausalLM.from_config(config).eval()
    teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    calib = [torch.randint(0, len(tok), (4, 16), generator=torch.Generator().manual_seed(1))]
    save_pruned(prune(teacher, score(teacher, calib), sparsity=0.5, allocation="uniform"), tok,
                tmp_path / "student")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(d.text for d in tiny_corpus.documents))

    result = distill(cfg_for(tmp_path / "teacher", tmp_path / "student", corpus), tmp_path / "kd")
    assert math.isfinite(result.val_loss) and result.teacher_params is not None
    assert (tmp_path / "kd" / "DONE.json").exists()
    capsys.readouterr()
    assert main(["eval", str(tmp_path / "kd"), "--max-bytes", "2000", "--json"]) == 0
    assert math.isfinite(json.loads(capsys.readouterr().out)["loss"])

    pytest.importorskip("lm_eval", reason="lm-eval not installed (pip install 'capgap[eval]')")
    from capgap.evaluate.lm_eval import evaluate_tasks
    from capgap.models.io import load_model

    student, _ = load_model(tmp_path / "kd" / "model")
    quotes = evaluate_tasks(student, tok, tasks=["capgap_offline"], batch_size=4)["results"]["capgap_quotes"]
    assert 0.0 <= quotes["acc,none"] <= 1.0
