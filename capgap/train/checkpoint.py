"""Training checkpoints: safetensors for tensors, JSON for everything else, never pickle.

A checkpoint is a folder ``step-XXXXXXXX/`` in one of two layouts. *Full* (one process, DDP):

* ``model.safetensors``      the weights (tied aliases stored once, restored on load),
* ``optimizer.safetensors``  every tensor of the optimizer state, keyed ``state/<i>/<name>``,
* ``rng.safetensors``        torch CPU (and CUDA) generator states,
* ``state.json``             step, tokens seen, the optimizer's param groups, caller extras.

*Sharded* (FSDP): every rank writes only what it holds, nothing is gathered on rank 0.

* ``shards/``                ``torch.distributed.checkpoint`` with its Hugging Face storage: one
  safetensors file per rank, each tensor's offset in the file header (no pickled metadata);
  keys ``model/<fqn>`` and ``optimizer/state/<fqn>/<name>``. A resume with another number
  of ranks re-shards on load,
* ``rng-<rank>.safetensors`` each rank's generator states,
* ``state.json``             as above.

Either is written to a temporary folder and renamed into place, so a folder named ``step-*``
is always complete. ``CAPGAP_FAULT_CKPT_SLEEP`` (seconds) pauses mid-write so tests can
kill a process exactly inside that window.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file, save_file
from torch import nn

from capgap.models.io import distinct_names, unique_tensors

SHARDS = "shards"


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
                tensors[f"state/{idx}/{name}"] = value
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


def staging_dir(path: Path) -> Path:
    """A fresh temporary folder beside ``path`` to write its checkpoint into."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))


def commit(tmp: Path, path: Path) -> Path:
    """Flush every file written into ``tmp`` and rename it to ``path`` (replacing it)."""
    for f in tmp.rglob("*"):
        if f.is_file():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return path


def write_checkpoint(
    path: Path, model_sd: dict[str, torch.Tensor], optim_sd: dict[str, Any], state: dict[str, Any]
) -> Path:
    """Write a complete full-layout checkpoint folder at ``path`` atomically from state dicts."""
    tmp = staging_dir(path)
    try:
        save_file(unique_tensors(model_sd), str(tmp / "model.safetensors"))
        delay = float(os.environ.get("CAPGAP_FAULT_CKPT_SLEEP", "0") or 0)
        if delay:
            time.sleep(delay)  # test hook: widen the window a SIGKILL must survive
        opt_tensors, opt_meta = _optimizer_to_flat(optim_sd)
        save_file({k: v.detach().cpu().contiguous() for k, v in opt_tensors.items()},
                  str(tmp / "optimizer.safetensors"))
        save_file(rng_state(), str(tmp / "rng.safetensors"))
        _write_state(tmp, state, opt_meta)
        return commit(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _write_state(folder: Path, state: dict[str, Any], opt_meta: dict[str, Any]) -> None:
    (folder / "state.json").write_text(
        json.dumps({**state, "optimizer": opt_meta}, indent=1), encoding="utf-8"
    )


def _read_state(folder: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the caller's JSON state, the optimizer's param groups and scalars)."""
    state = json.loads((folder / "state.json").read_text(encoding="utf-8"))
    return state, state.pop("optimizer")


@contextlib.contextmanager
def _one_process_quietly() -> Iterator[None]:
    """Without a process group DCP reads and writes everything in this process, which is what
    a one-process resume wants; it warns that it assumes so on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="torch.distributed is disabled")
        yield


def is_sharded(path: Path) -> bool:
    """Whether the checkpoint at ``path`` has the sharded layout."""
    return (path / SHARDS).is_dir()


def _shard_tensors(
    model_sd: dict[str, torch.Tensor], optim_sd: dict[str, Any]
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors DCP stores, each once, and the optimizer's JSON rest.

    Tied aliases are left out (safetensors refuses memory shared between keys); loading in
    place fills them through the memory they share.
    """
    opt_tensors, opt_meta = _optimizer_to_flat(optim_sd)
    tensors = {f"model/{k}": v for k, v in model_sd.items()}
    tensors.update({f"optimizer/{k}": v for k, v in opt_tensors.items()})
    local = {k: v.to_local() if hasattr(v, "to_local") else v for k, v in tensors.items()}
    return {k: tensors[k] for k in distinct_names(local)}, opt_meta


def write_shards(
    folder: Path, model_sd: dict[str, torch.Tensor], optim_sd: dict[str, Any],
    state: dict[str, Any], rank: int,
) -> None:
    """This rank's part of a sharded checkpoint into ``folder`` (every rank calls it: DCP's
    save is a collective); ``model_sd``/``optim_sd`` are the sharded (DTensor) state dicts."""
    tensors, opt_meta = _shard_tensors(model_sd, optim_sd)
    with _one_process_quietly():
        dcp.save(tensors, storage_writer=dcp.HuggingFaceStorageWriter(
            str(folder / SHARDS), save_distributed=True))
    save_file(rng_state(), str(folder / f"rng-{rank}.safetensors"))
    if rank == 0:
        _write_state(folder, state, opt_meta)


def read_shards(
    path: Path, model_sd: dict[str, torch.Tensor], optim_sd: dict[str, Any], rank: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fill this rank's ``model_sd`` and ``optim_sd`` (the live state dicts, sharded or not) in
    place from a sharded checkpoint; restore this rank's RNG. Returns (JSON state, optimizer
    state dict to load). Every rank calls it."""
    state, opt_meta = _read_state(path)
    tensors, _ = _shard_tensors(model_sd, optim_sd)
    with _one_process_quietly():
        dcp.load(tensors, storage_reader=dcp.HuggingFaceStorageReader(str(path / SHARDS)))
    rng = path / f"rng-{rank}.safetensors"
    if not rng.exists():  # resumed on more ranks than wrote it: the new ones start from rank 0's
        rng = path / "rng-0.safetensors"
    set_rng_state(load_file(str(rng)))
    opt_tensors, _ = _optimizer_to_flat(optim_sd)
    return state, _optimizer_from_flat(opt_tensors, opt_meta)


def read_checkpoint(
    path: Path, device: str = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, Any]]:
    """A full-layout checkpoint: (model state dict without tied aliases, optimizer state dict,
    JSON state); restores RNG."""
    state, opt_meta = _read_state(path)
    model_sd = load_file(str(path / "model.safetensors"), device=device)
    optim_sd = _optimizer_from_flat(
        load_file(str(path / "optimizer.safetensors"), device=device), opt_meta
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
