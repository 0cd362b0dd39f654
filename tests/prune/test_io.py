"""Saving and loading pruned models: vanilla checkpoints, the capgap format, padded export."""

from __future__ import annotations

import json

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from torch.testing import assert_close
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

from capgap.errors import CapgapError
from capgap.models.arch import adapter_for
from capgap.models.params import count_params
from capgap.prune import KeepPlan, load_pruned, materialize, prune, save_pruned, score
from tests.prune.conftest import ARCHS, VOCAB, calib, tiny_model

CLOSE = {"rtol": 1e-5, "atol": 1e-5}


def logits(model, tokens: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
    with torch.no_grad():
        return model.eval()(tokens).logits


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    vocab = {f"w{i}": i for i in range(VOCAB)}
    tok = Tokenizer(WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0", eos_token="w1")


@pytest.mark.parametrize("arch", ARCHS)
def test_uniform_saves_a_vanilla_checkpoint(arch: str, tmp_path, tokens: torch.Tensor) -> None:  # noqa: ANN001
    model = tiny_model(arch, dtype=torch.float32)
    r = prune(model, score(model, calib(2)), sparsity=0.5, allocation="uniform")
    save_pruned(r, tiny_tokenizer(), tmp_path / "s")
    assert (tmp_path / "s" / "model.safetensors").exists()
    vanilla = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    assert_close(logits(vanilla, tokens), logits(r.model, tokens), rtol=0, atol=0)
    report = json.loads((tmp_path / "s" / "prune_report.json").read_text())
    assert report["params_after"] == count_params(vanilla).total
    assert report["params_after_non_embedding"] == count_params(vanilla).non_embedding
    assert report["export"] == {"format": "vanilla"}
    _, tok = load_pruned(tmp_path / "s")
    assert tok is not None and tok.convert_tokens_to_ids("w5") == 5


@pytest.mark.parametrize("arch", ARCHS)
def test_global_round_trips_through_the_capgap_format(arch: str, tmp_path, tokens: torch.Tensor) -> None:  # noqa: ANN001
    model = tiny_model(arch, "alt", dtype=torch.float32)
    r = prune(model, score(model, calib(2)), sparsity=0.6, allocation="global", drop_layers=1, drop_rule="score")
    assert not r.plan.is_uniform()
    save_pruned(r, None, tmp_path / "s")
    loaded, tok = load_pruned(tmp_path / "s")
    assert tok is None
    assert type(loaded) is type(model)
    assert_close(logits(loaded, tokens), logits(r.model, tokens), rtol=0, atol=0)
    report = json.loads((tmp_path / "s" / "prune_report.json").read_text())
    assert report["params_after"] == count_params(loaded).total
    with pytest.raises(Exception):  # noqa: B017 - a vanilla loader must fail loudly, not mis-load
        AutoModelForCausalLM.from_pretrained(tmp_path / "s")


def _odd_plan(model) -> KeepPlan:  # noqa: ANN001
    """Per-layer counts that differ, an attention-less and an FFN-less layer, an awkward hidden width."""
    geo = adapter_for(model).geometry(model)
    d = geo.hidden - 5  # not a multiple of head_dim (GPT-2/NeoX) nor of the heads (LLaMA)
    return KeepPlan(
        layers=[0, 1, 3],
        hidden=torch.randperm(geo.hidden, generator=torch.Generator().manual_seed(0))[:d].sort().values,
        heads=[torch.tensor([], dtype=torch.long), torch.arange(geo.n_kv), torch.tensor([1])],
        neurons=[torch.arange(0, geo.ffn, 2), torch.tensor([], dtype=torch.long), torch.arange(5)],
    )


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("variant", ["base", "alt"])
def test_vanilla_export_is_exact(arch: str, variant: str, tmp_path, tokens: torch.Tensor) -> None:  # noqa: ANN001
    model = tiny_model(arch, variant)
    small = materialize(model, _odd_plan(model), "global")
    adapter = adapter_for(model)
    if adapter.head_norms or adapter.attn_norms_share_eps:  # padding is not exact for them
        with pytest.raises(CapgapError, match="stays in capgap format"):
            save_pruned(small, None, tmp_path / "v", export="vanilla")
        assert not (tmp_path / "v").exists()
        return
    save_pruned(small, None, tmp_path / "v", export="vanilla")
    vanilla = AutoModelForCausalLM.from_pretrained(tmp_path / "v", dtype=torch.float64)
    assert vanilla.config.hidden_size > small.config.hidden_size  # hidden dims were padded
    # LLaMA: RMSNorm statistics run in float32 even for a float64 model
    assert_close(logits(vanilla, tokens), logits(small, tokens), rtol=1e-6, atol=1e-6)
    report = json.loads((tmp_path / "v" / "prune_report.json").read_text())
    assert report["export"]["format"] == "vanilla-padded"
    assert report["export"]["params_total"] == count_params(vanilla).total


def test_a_trained_pruned_model_saves_and_loads(tmp_path, tokens: torch.Tensor) -> None:  # noqa: ANN001
    """What distillation does: train the pruned student, then save it with save_pruned."""
    model = tiny_model("gpt_neox", dtype=torch.float32)
    r = prune(model, score(model, calib(1)), sparsity=0.5, allocation="global")
    student = r.model.train()
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    batch = calib(1)[0]
    student(input_ids=batch, labels=batch).loss.backward()
    opt.step()
    save_pruned(student, None, tmp_path / "s")
    loaded, _ = load_pruned(tmp_path / "s")
    assert_close(logits(loaded, tokens), logits(student, tokens), **CLOSE)


def test_existing_output_is_not_overwritten_unless_asked(tmp_path) -> None:  # noqa: ANN001
    model = tiny_model("llama", dtype=torch.float32)
    r = prune(model, score(model, calib(1)), sparsity=0.5)
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("x")
    with pytest.raises(CapgapError, match="exists"):
        save_pruned(r, None, tmp_path / "s")
    assert (tmp_path / "s" / "keep.txt").exists()
    save_pruned(r, None, tmp_path / "s", overwrite=True)
    assert not (tmp_path / "s" / "keep.txt").exists()
    with pytest.raises(CapgapError, match="not a model made by capgap.prune"):
        save_pruned(model, None, tmp_path / "t")
    assert not (tmp_path / "t").exists()


@pytest.mark.slow
def test_lm_eval_scores_a_loaded_per_layer_model_in_memory(tmp_path) -> None:  # noqa: ANN001
    """The capgap format needs no custom code: lm-eval's HFLM takes the loaded model."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    model = tiny_model("llama", dtype=torch.float32)
    save_pruned(materialize(model, _odd_plan(model), "global"), tiny_tokenizer(), tmp_path / "s")
    loaded, tok = load_pruned(tmp_path / "s")
    lm = HFLM(pretrained=loaded, tokenizer=tok, batch_size=1, max_length=32)
    req = Instance(request_type="loglikelihood", doc={}, arguments=("w1 w2 w3", " w4"), idx=0)
    (logprob, _), = lm.loglikelihood([req])
    ids = tok("w1 w2 w3 w4")["input_ids"]
    expected = logits(loaded, torch.tensor([ids])).log_softmax(-1)[0, -2, ids[-1]]
    assert logprob == pytest.approx(float(expected), abs=1e-5)
