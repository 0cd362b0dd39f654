"""Training checkpoints: safetensors for tensors, JSON for everything else, never pickle.

A checkpoint is a folder ``step-XXXXXXXX/`` holding

* ``model.safetensors``      the weights (``safetensors.torch.save_model`` handles ties),
* ``optimizer.safetensors``  every tensor of the optimizer state, keyed ``state/<i>/<name>``,
* ``rng.safetensors``        torch CPU (and CUDA) generator states,
* ``state.json``             step, tokens seen, the optimizer's param groups, caller extras.

It is written to a temporary folder and renamed into place, so a folder named ``step-*``
is always complete. ``CAPGAP_FAULT_CKPT_SLEEP`` (seconds) pauses mid-write so tests can
kill a process exactly inside that window.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn


def _optimizer_to_flat(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{idx}/{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _optimizer_from_flat(
    opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split("/", 2)
        state.setdefault(int(idx), {})[name] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(int(idx), {}).update(values)
    groups = meta["param_groups"]
    for g in groups:  # JSON turned tuples into lists; AdamW unpacks betas either way
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


def _rng_state() -> dict[str, torch.Tensor]:
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def _set_rng_state(states: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(states["cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Write a complete checkpoint folder at ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        save_model(model, str(tmp / "model.safetensors"))
        delay = float(os.environ.get("CAPGAP_FAULT_CKPT_SLEEP", "0") or 0)
        if delay:
            time.sleep(delay)  # test hook: widen the window a SIGKILL must survive
        opt_tensors, opt_meta = _optimizer_to_flat(optimizer)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(_rng_state(), str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(
            json.dumps({**state, "optimizer": opt_meta}, indent=1), encoding="utf-8"
        )
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Restore weights, optimizer and RNG from ``path``; return the JSON state."""
    load_model(model, str(path / "model.safetensors"), device=_device_of(model))
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    if optimizer is not None:
        tensors = load_file(str(path / "optimizer.safetensors"), device=_device_of(model))
        _optimizer_from_flat(optimizer, tensors, state["optimizer"])
    _set_rng_state(load_file(str(path / "rng.safetensors")))
    return state


def clean_partial(root: Path) -> None:
    """Remove temporary folders left by a checkpoint write that was killed."""
    if root.is_dir():
        for p in root.iterdir():
            if p.name.startswith(".") and p.name.endswith(".tmp"):
                shutil.rmtree(p, ignore_errors=True)


def _device_of(model: nn.Module) -> str:
    try:
        return str(next(model.parameters()).device)
    except StopIteration:
        return "cpu"
