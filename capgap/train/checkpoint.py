"""Training checkpoints: safetensors for tensors, JSON for everything else, never pickle.

A checkpoint is a folder ``step-XXXXXXXX/`` holding

* ``model.safetensors``      the weights (tied aliases stored once, restored on load),
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
from safetensors.torch import load_file, save_file
from torch import nn

from capgap.models.io import unique_tensors


def _optimizer_to_flat(sd: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer state dict into its tensors and a JSON-able rest.

    Parameter keys are ints for a plain optimizer and parameter names (FQNs) for the full
    state dict FSDP gathers; both survive the round trip.
    """
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state/{idx}/{name}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _key(idx: str) -> int | str:
    return int(idx) if idx.isdigit() else idx


def _optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict[str, Any]:
    state: dict[int | str, dict[str, Any]] = {}
    for key, value in tensors.items():
        _, idx, name = key.split("/", 2)
        state.setdefault(_key(idx), {})[name] = value
    for idx, values in meta["scalars"].items():
        state.setdefault(_key(idx), {}).update(values)
    groups = meta["param_groups"]
    for g in groups:  # JSON turned tuples into lists; AdamW unpacks betas either way
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    return {"state": state, "param_groups": groups}


def fill_tied(model: nn.Module, sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Add the tied names :func:`unique_tensors` dropped, from the name they alias in ``model``."""
    by_param: dict[int, list[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        by_param.setdefault(id(p), []).append(name)
    out = dict(sd)
    for names in by_param.values():
        present = [n for n in names if n in out]
        for n in names:
            if n not in out and present:
                out[n] = out[present[0]]
    return out


def rng_state() -> dict[str, torch.Tensor]:
    """The torch CPU (and CUDA) generator states, as checkpoints store them."""
    out = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            out[f"cuda{i}"] = s
    return out


def set_rng_state(states: dict[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(states["cpu"])
    cuda = [states[k] for k in sorted(states) if k.startswith("cuda")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def write_checkpoint(
    path: Path, model_sd: dict[str, torch.Tensor], optim_sd: dict[str, Any], state: dict[str, Any]
) -> Path:
    """Write a complete checkpoint folder at ``path`` atomically from state dicts."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        save_file(unique_tensors(model_sd), str(tmp / "model.safetensors"))
        delay = float(os.environ.get("CAPGAP_FAULT_CKPT_SLEEP", "0") or 0)
        if delay:
            time.sleep(delay)  # test hook: widen the window a SIGKILL must survive
        opt_tensors, opt_meta = _optimizer_to_flat(optim_sd)
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file(rng_state(), str(tmp / "rng.safetensors"))
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


def read_checkpoint(
    path: Path, device: str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """(model state dict without tied aliases, optimizer state dict, JSON state); restores RNG."""
    state = json.loads((path / "state.json").read_text(encoding="utf-8"))
    model_sd = load_file(str(path / "model.safetensors"), device=device)
    optim_sd = _optimizer_from_flat(
        load_file(str(path / "optimizer.safetensors"), device=device), state.pop("optimizer")
    )
    set_rng_state(load_file(str(path / "rng.safetensors")))
    return model_sd, optim_sd, state


def save_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]
) -> Path:
    """Checkpoint a plain (unwrapped) model and its optimizer; see :func:`write_checkpoint`."""
    return write_checkpoint(path, model.state_dict(), optimizer.state_dict(), state)


def load_checkpoint(
    path: Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict[str, Any]:
    """Restore weights, optimizer and RNG of a plain model from ``path``; return the JSON state."""
    model_sd, optim_sd, state = read_checkpoint(path, _device_of(model))
    model.load_state_dict(fill_tied(model, model_sd))
    if optimizer is not None:
        optimizer.load_state_dict(optim_sd)
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
