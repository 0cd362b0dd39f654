"""save_model → load_model round trips, and one-line errors for every broken folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import BertConfig, T5Config

from capgap.errors import CapgapError
from capgap.models import build_model, check_tokenizer_fits, load_model, save_model
from tests.models.conftest import tiny_config, tiny_tokenizer

KINDS = ["gpt2", "gpt_neox", "llama", "mistral", "qwen2"]


def saved(tmp_path: Path, kind: str = "gpt2", tokenizer: bool = True) -> Path:
    torch.manual_seed(0)
    model = build_model(tiny_config(kind))
    return save_model(model, tiny_tokenizer() if tokenizer else None, tmp_path / kind)


def one_line_error(match: str) -> pytest.RaisesContext:
    """CapgapError (whose message the class itself folds onto one line) matching ``match``."""
    return pytest.raises(CapgapError, match=match)


@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_gives_identical_logits(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    model = build_model(tiny_config(kind)).eval()
    tok = tiny_tokenizer()
    out = save_model(model, tok, tmp_path / "m", extra_files={"notes/run.json": {"seed": 0}})
    loaded, loaded_tok = load_model(out)
    assert type(loaded) is type(model) and loaded.config._attn_implementation == "sdpa"
    assert not loaded.training
    text = "w1 w2 w3 w4 w5 w6"
    assert loaded_tok(text).input_ids == tok(text).input_ids == [4, 5, 6, 7, 8, 9]
    ids = torch.tensor([loaded_tok(text).input_ids])
    with torch.no_grad():
        torch.testing.assert_close(loaded(ids).logits, model(ids).logits, rtol=0, atol=0)
    assert json.loads((out / "notes/run.json").read_text()) == {"seed": 0}
    tied = model.config.tie_word_embeddings
    assert (loaded.get_output_embeddings().weight is loaded.get_input_embeddings().weight) == tied


def test_tied_weights_stored_once(tmp_path: Path) -> None:
    tensors = load_file(saved(tmp_path, "gpt2") / "model.safetensors")
    assert "transformer.wte.weight" in tensors and "lm_head.weight" not in tensors


def test_save_refuses_existing_folder_unless_overwrite(tmp_path: Path) -> None:
    out = saved(tmp_path)
    model, tok = load_model(out)
    with one_line_error("already exists; pass overwrite=True"):
        save_model(model, tok, out)
    save_model(model, tok, out, extra_files={"README.md": "hi"}, overwrite=True)
    assert (out / "README.md").read_text() == "hi" and (out / "config.json").is_file()


@pytest.mark.parametrize("name", ["../escape.txt", "/abs.txt", "config.json"])
def test_bad_extra_file_names(tmp_path: Path, name: str) -> None:
    model = build_model(tiny_config("gpt2"))
    with one_line_error("extra file"):
        save_model(model, None, tmp_path / "m", extra_files={name: "x"})
    assert not (tmp_path / "m").exists()  # nothing half-written


def test_dtype_and_device(tmp_path: Path) -> None:
    model, _ = load_model(saved(tmp_path), dtype="bfloat16", device="cpu")
    assert model.dtype == torch.bfloat16
    with one_line_error("unknown dtype 'float33'"):
        load_model(tmp_path / "gpt2", dtype="float33")


def test_missing_tokenizer_is_an_error_unless_optional(tmp_path: Path) -> None:
    out = saved(tmp_path, tokenizer=False)
    with one_line_error("no tokenizer files in .*require_tokenizer=False"):
        load_model(out)
    model, tok = load_model(out, require_tokenizer=False)
    assert tok is None and model.config.vocab_size == 100


def test_missing_folder(tmp_path: Path) -> None:
    with one_line_error("model folder not found"):
        load_model(str(tmp_path / "nope"))
    with one_line_error("model folder not found"):
        load_model("./runs/teacher/final")


def test_file_instead_of_folder(tmp_path: Path) -> None:
    (tmp_path / "model.bin").write_bytes(b"x")
    with one_line_error("is a file; expected a model folder"):
        load_model(tmp_path / "model.bin")


def test_folder_without_config(tmp_path: Path) -> None:
    with one_line_error("no config.json in"):
        load_model(tmp_path)


def test_corrupt_config(tmp_path: Path) -> None:
    out = saved(tmp_path)
    (out / "config.json").write_text('{"model_type": "gpt2", ')
    with one_line_error("config.json is not valid JSON"):
        load_model(out)
    (out / "config.json").write_text('["gpt2"]')
    with one_line_error("has no model_type"):
        load_model(out)


def test_truncated_safetensors(tmp_path: Path) -> None:
    out = saved(tmp_path)
    weights = out / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with one_line_error(r"cannot load weights from .*SafetensorError"):
        load_model(out)


def test_missing_weights_file(tmp_path: Path) -> None:
    out = saved(tmp_path)
    (out / "model.safetensors").unlink()
    with one_line_error("no weights"):
        load_model(out)


def test_missing_tensor_is_not_silently_random(tmp_path: Path) -> None:
    """transformers would initialise a missing tensor randomly and only log it."""
    out = saved(tmp_path)
    tensors = load_file(out / "model.safetensors")
    del tensors["transformer.h.0.attn.c_proj.weight"]
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    with one_line_error("do not match its config.json: transformer.h.0.attn.c_proj.weight missing"):
        load_model(out)


def test_wrong_shape_tensor_is_refused(tmp_path: Path) -> None:
    out = saved(tmp_path, "llama")
    config = json.loads((out / "config.json").read_text())
    config["intermediate_size"] = 64
    (out / "config.json").write_text(json.dumps(config))
    with one_line_error(r"down_proj.weight is \[32, 48\] in the checkpoint, \[32, 64\] by config"):
        load_model(out)


@pytest.mark.parametrize("config", [BertConfig(vocab_size=100), T5Config(vocab_size=100)])
def test_unsupported_arch_folder(tmp_path: Path, config) -> None:  # noqa: ANN001
    config.save_pretrained(tmp_path)
    with one_line_error(r"unsupported architecture '(bert|t5)'; supported: gpt2, gpt_neox, llama"):
        load_model(tmp_path)


def test_hub_name_offline_is_a_clear_error() -> None:
    with one_line_error("neither a local model folder nor loadable from the Hugging Face hub"):
        load_model("capgap-test-org/no-such-model")


def test_check_tokenizer_fits(tmp_path: Path) -> None:
    config = tiny_config("gpt2")  # vocab 100
    check_tokenizer_fits(config, tiny_tokenizer(40))  # embedding padded beyond the tokenizer: fine
    with one_line_error("tokenizer has 103 tokens but the model's vocab_size is 100"):
        check_tokenizer_fits(config, tiny_tokenizer(100))
    config.eos_token_id = 100
    with one_line_error("eos_token_id=100 is out of range"):
        check_tokenizer_fits(config, tiny_tokenizer(40))
