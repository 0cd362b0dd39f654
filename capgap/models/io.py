"""Load and save standard Hugging Face checkpoints, with one-line errors for bad folders.

What transformers does silently and capgap refuses:

* weights missing from a checkpoint are *randomly initialised* with only a log line — we
  raise, since a half-random teacher would quietly ruin a sweep;
* ``AutoTokenizer`` on a folder without tokenizer files builds an *empty* GPT-2 tokenizer
  (vocab 0) — we look for tokenizer files first;
* ``AutoModelForCausalLM`` happily builds a BERT LM head — we accept only the layouts capgap
  can prune (the registry, :mod:`capgap.models.arch`) before touching weights.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    PreTrainedTokenizerFast,
)

from capgap.errors import CapgapError
from capgap.io import atomic_dir, write_json, write_text
from capgap.models.arch import adapter_for, adapter_for_type, attn_implementation

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "tokenizer.model")
_GENERIC_TOKENIZERS = ("TokenizersBackend", "PreTrainedTokenizerFast")
# Errors a broken or foreign checkpoint raises inside transformers / safetensors / torch.
_LOAD_ERRORS = (
    OSError,
    ValueError,
    RuntimeError,
    KeyError,
    EOFError,
    SafetensorError,
    pickle.UnpicklingError,
)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"


def _local_dir(path_or_name: str | os.PathLike[str]) -> Path | None:
    """The model folder, or ``None`` when ``path_or_name`` is a hub name like ``org/model``."""
    text = str(path_or_name)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CapgapError(f"{path} is a file; expected a model folder with config.json")
        return path
    # Hub names are "name" or "org/name"; anything else that does not exist is a typo'd path.
    if isinstance(path_or_name, Path) or text.startswith((".", "/", "~")) or text.count("/") > 1:
        raise CapgapError(f"model folder not found: {text}")
    return None


def load_config(path_or_name: str | os.PathLike[str]) -> PretrainedConfig:
    """The config of a local model folder or hub model, checked to be a supported arch."""
    local = _local_dir(path_or_name)
    if local is None:
        try:
            config = AutoConfig.from_pretrained(str(path_or_name))
        except _LOAD_ERRORS as e:
            raise CapgapError(
                f"'{path_or_name}' is neither a local model folder nor loadable from the "
                f"Hugging Face hub ({_first_line(e)})"
            ) from None
    else:
        config = _local_config(local)
    adapter_for(config)
    return config


def _local_config(folder: Path) -> PretrainedConfig:
    file = folder / "config.json"
    if not file.is_file():
        raise CapgapError(f"no config.json in {folder}; expected a Hugging Face model folder")
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CapgapError(f"{file} is not valid JSON ({_first_line(e)})") from None
    if not isinstance(raw, dict) or "model_type" not in raw:
        raise CapgapError(f"{file} has no model_type; is it a Hugging Face model config?")
    adapter_for_type(raw["model_type"])  # refuse BERT, T5, ... before reading weights
    try:
        return AutoConfig.from_pretrained(folder)
    except _LOAD_ERRORS as e:
        raise CapgapError(f"cannot read {file} ({_first_line(e)})") from None


def _parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | str:
    if dtype is None or dtype == "auto":
        return "auto"  # transformers 5: the dtype stored in the checkpoint
    if isinstance(dtype, torch.dtype):
        return dtype
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise CapgapError(f"unknown dtype '{dtype}'; use float32, bfloat16 or float16")
    return value


def load_model(
    path_or_name: str | os.PathLike[str],
    dtype: torch.dtype | str | None = None,
    device: str | torch.device | None = None,
    require_tokenizer: bool = True,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase | None]:
    """Load a causal LM and its tokenizer from a local HF folder or a hub name.

    ``dtype=None`` keeps the checkpoint's dtype. With ``require_tokenizer=False`` a folder
    without tokenizer files gives ``(model, None)``. The model is in eval mode.
    """
    config = load_config(path_or_name)
    local = _local_dir(path_or_name)
    source = str(local if local is not None else path_or_name)
    if local is not None and not any((local / f).is_file() for f in WEIGHT_FILES):
        raise CapgapError(f"no weights (model.safetensors or pytorch_model.bin) in {local}")
    try:
        model, info = AutoModelForCausalLM.from_pretrained(
            source,
            config=config,
            dtype=_parse_dtype(dtype),
            attn_implementation=attn_implementation(config),
            output_loading_info=True,
            ignore_mismatched_sizes=True,  # reported in `info`, refused below with the names
        )
    except _LOAD_ERRORS as e:
        raise CapgapError(f"cannot load weights from {source} ({_first_line(e)})") from None
    _refuse_partial_load(source, info)
    tokenizer = load_tokenizer(source, required=require_tokenizer)
    if tokenizer is not None:
        check_tokenizer_fits(model.config, tokenizer)
    if device is not None:
        model.to(device)
    return model.eval(), tokenizer


def _refuse_partial_load(source: str, info: dict[str, Any]) -> None:
    """Raise if any weight was missing or of the wrong shape (transformers re-initialises)."""
    bad = [f"{k} missing" for k in sorted(info["missing_keys"])]
    for key, ckpt, model in sorted(info["mismatched_keys"], key=str):
        bad.append(f"{key} is {list(ckpt)} in the checkpoint, {list(model)} by config")
    if bad:
        more = f" (+{len(bad) - 2} more)" if len(bad) > 2 else ""
        raise CapgapError(
            f"weights in {source} do not match its config.json: {'; '.join(bad[:2])}{more}"
        )


def load_tokenizer(
    path_or_name: str | os.PathLike[str], required: bool = True
) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved with a model; ``None`` if there is none and not ``required``."""
    local = _local_dir(path_or_name)
    if local is not None and not any((local / f).is_file() for f in TOKENIZER_FILES):
        if not required:
            return None
        raise CapgapError(
            f"no tokenizer files in {local} (tokenizer.json, vocab.json, ...); save the "
            "tokenizer with the model, or load without one (require_tokenizer=False)"
        )
    # Trap: for some model types (qwen2) AutoTokenizer ignores a saved generic tokenizer
    # class and builds the model's own class from vocab/merges files that are not there,
    # giving an *empty* tokenizer. A folder saved with a generic fast tokenizer is loaded
    # with that class.
    generic = local is not None and _saved_tokenizer_class(local) in _GENERIC_TOKENIZERS
    cls = PreTrainedTokenizerFast if generic else AutoTokenizer
    try:
        tokenizer = cls.from_pretrained(str(path_or_name))
    except _LOAD_ERRORS as e:
        if not required and local is None:
            return None
        raise CapgapError(
            f"cannot load the tokenizer of {path_or_name} ({_first_line(e)})"
        ) from None
    if len(tokenizer) == 0:
        raise CapgapError(f"the tokenizer of {path_or_name} loaded with an empty vocabulary")
    return tokenizer


def _saved_tokenizer_class(folder: Path) -> str | None:
    try:
        data = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data.get("tokenizer_class") if isinstance(data, dict) else None


def check_tokenizer_fits(config: PretrainedConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """CapgapError unless every id ``tokenizer`` can produce is a row of the embedding.

    The embedding may be *larger* than the tokenizer (Pythia pads 50277 tokens to 50432
    rows for speed); the extra rows are never produced, which is fine.
    """
    vocab = config.vocab_size
    if len(tokenizer) > vocab:
        raise CapgapError(
            f"tokenizer has {len(tokenizer)} tokens but the model's vocab_size is {vocab}; "
            "they were not made for each other"
        )
    top = max(tokenizer.get_vocab().values(), default=-1)
    if top >= vocab:
        raise CapgapError(f"tokenizer produces id {top}, out of range for vocab_size {vocab}")
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        ids = getattr(config, key, None)
        for i in ids if isinstance(ids, list) else [ids]:
            if i is not None and not 0 <= i < vocab:
                raise CapgapError(f"config {key}={i} is out of range for vocab_size {vocab}")


def distinct_names(state: dict[str, torch.Tensor]) -> list[str]:
    """The names of ``state`` with each tensor sharing memory with an earlier one left out
    (a tied LM head): safetensors refuses shared memory."""
    seen: set[tuple] = set()
    out = []
    for name, t in state.items():
        key = (t.data_ptr(), tuple(t.shape), t.dtype) if t.numel() else (name,)
        if key not in seen:
            seen.add(key)
            out.append(name)
    return out


def unique_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each shared tensor kept once, under its first name, detached, contiguous
    and on the CPU (:func:`distinct_names`); the tie is restored on load
    (``tie_word_embeddings``, or the names the model aliases)."""
    return {name: state[name].detach().cpu().contiguous() for name in distinct_names(state)}


def save_model(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase | None,
    out_dir: str | os.PathLike[str],
    extra_files: dict[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a standard HF folder (safetensors, config, generation config, tokenizer).

    The folder appears complete or not at all (:func:`capgap.io.atomic_dir`). Tied weights
    are stored once by ``save_pretrained``. ``extra_files`` maps a relative file name to
    its content: ``str`` (text), ``bytes``, a ``dict``/``list`` (JSON), or a ``Path`` to copy.
    """
    out = Path(out_dir)
    if out.exists() and not overwrite:
        raise CapgapError(f"{out} already exists; pass overwrite=True (--overwrite) to replace it")
    if tokenizer is not None:
        check_tokenizer_fits(model.config, tokenizer)
    with atomic_dir(out, overwrite=overwrite) as tmp:
        model.save_pretrained(tmp)
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        for name, content in (extra_files or {}).items():
            _write_extra(tmp, name, content)
    return out


def _write_extra(folder: Path, name: str, content: Any) -> None:
    rel = Path(name)
    if rel.is_absolute() or ".." in rel.parts or not rel.parts:
        raise CapgapError(f"extra file name '{name}' must be a relative path inside the folder")
    target = folder / rel
    if target.exists():
        raise CapgapError(f"extra file '{name}' would overwrite a file the model saved")
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        write_text(target, content)
    elif isinstance(content, bytes):
        target.write_bytes(content)
    elif isinstance(content, (dict, list)):
        write_json(target, content)
    elif isinstance(content, os.PathLike):
        shutil.copyfile(content, target)
    else:
        raise CapgapError(f"extra file '{name}': unsupported content type {type(content).__name__}")
