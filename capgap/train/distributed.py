"""Training across processes started by ``torchrun``: DDP or FSDP2, one code path with 1 process.

``torchrun --nproc_per_node N -m capgap distill ...`` sets ``WORLD_SIZE``; :func:`setup` then
joins the process group (gloo on CPU, nccl on CUDA) and the loop asks a :class:`Parallel` for
everything that differs between one process and many:

* the student is wrapped together with its step function (:class:`StepModule`), so DDP and
  FSDP see one ``forward`` per micro-batch even though the chunked loss calls the decoder body
  and the LM head weight directly (FSDP must gather the head inside a root forward);
* each rank trains on its own contiguous slice of the global micro-batch, so the global batch
  (and, with equal-length rows, the mean loss and gradient) equals the one-process batch;
* logged losses are averaged over ranks; only rank 0 writes metrics and models;
* under FSDP every rank writes its own shards of a checkpoint (``torch.distributed.checkpoint``,
  nothing gathered on rank 0); otherwise rank 0 writes the full state
  (:mod:`capgap.train.checkpoint` has both layouts). Either layout resumes under any mode.

A frozen teacher is not wrapped: every rank holds a replica and runs it on its own slice.
"""

from __future__ import annotations

import contextlib
import copy
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)
from torch.distributed.fsdp import fully_shard
from torch.nn.parallel import DistributedDataParallel

from capgap.errors import CapgapError
from capgap.train.checkpoint import (
    commit,
    fill_tied,
    is_sharded,
    read_checkpoint,
    read_shards,
    staging_dir,
    write_checkpoint,
    write_shards,
)

ParallelMode = Literal["ddp", "fsdp"]
T = TypeVar("T")


class StepModule(nn.Module):
    """The student and its step function as one module: ``forward(batch) -> (loss, metrics)``."""

    def __init__(self, model: nn.Module, step_fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.step_fn = step_fn  # a plain attribute: a teacher it closes over stays unwrapped

    def forward(self, batch: Any) -> tuple[Tensor, dict[str, float]]:
        return self.step_fn(self.model, batch)


def world_size() -> int:
    """Processes in this job (``WORLD_SIZE`` from torchrun; 1 otherwise)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class Parallel:
    """This process's place in the job and the operations that depend on it."""

    mode: Literal["none", "ddp", "fsdp"]
    world: int
    rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # -- collectives (no-ops with one process) -------------------------------------------
    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def gather(self, values: list[float]) -> list[list[float]]:
        """Every rank's ``values``, in rank order (one all-gather for the whole list)."""
        if self.world == 1:
            return [values]
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        out = [torch.empty_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [o.tolist() for o in out]

    def on_main(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` on rank 0 and give every rank its result, or its CapgapError."""
        if self.world == 1:
            return fn()
        box: list[Any] = [None]
        if self.is_main:
            try:
                box[0] = ("ok", fn())
            except CapgapError as e:
                box[0] = ("error", str(e))
        dist.broadcast_object_list(box, src=0)
        kind, value = box[0]
        if kind == "error":
            raise CapgapError(value)
        return value

    # -- data ----------------------------------------------------------------------------
    def shard(self, batch: Any) -> Any:
        """This rank's contiguous rows of a global micro-batch (a tensor or a dict of them)."""
        if self.world == 1:
            return batch
        if isinstance(batch, dict):
            return {k: self.shard(v) for k, v in batch.items()}
        rows = batch.shape[0]
        if rows % self.world:
            raise CapgapError(f"train.micro_batch_size={rows} must be divisible by the "
                              f"{self.world} processes (each takes an equal slice)")
        per = rows // self.world
        return batch[self.rank * per:(self.rank + 1) * per]

    # -- model ---------------------------------------------------------------------------
    def wrap(self, step: StepModule) -> nn.Module:
        """``step`` ready to train here: as is, under DDP, or sharded with FSDP2."""
        if self.mode == "ddp":
            ids = [self.device.index] if self.device.type == "cuda" else None
            return DistributedDataParallel(step, device_ids=ids)
        if self.mode == "fsdp":
            for block in transformer_blocks(step.model):
                fully_shard(block)
            fully_shard(step)  # root: embeddings, final norm, LM head
        return step

    @contextlib.contextmanager
    def grad_sync(self, wrapped: nn.Module, enabled: bool) -> Iterator[None]:
        """Skip the gradient all-reduce on all but the last accumulation micro-batch."""
        if self.mode == "ddp" and not enabled:
            with wrapped.no_sync():
                yield
            return
        if self.mode == "fsdp":
            wrapped.set_requires_gradient_sync(enabled)
        yield

    @contextlib.contextmanager
    def gathered(self, wrapped: nn.Module) -> Iterator[None]:
        """Root FSDP parameters unsharded, so code may call the student's parts directly."""
        if self.mode != "fsdp":
            yield
            return
        wrapped.unshard()
        try:
            yield
        finally:
            wrapped.reshard()

    def clip_grad_norm(self, wrapped: nn.Module, max_norm: float) -> float:
        norm = torch.nn.utils.clip_grad_norm_(wrapped.parameters(), max_norm)
        if hasattr(norm, "full_tensor"):  # FSDP: a DTensor holding the global norm
            norm = norm.full_tensor()
        return float(norm)

    # -- state ---------------------------------------------------------------------------
    def save_checkpoint(
        self, path: Path, wrapped: nn.Module, model: nn.Module,
        optimizer: torch.optim.Optimizer, state: dict[str, Any],
    ) -> None:
        """Write the checkpoint folder ``path``; every rank must call it. Under FSDP each rank
        writes its own shards (nothing gathered); otherwise rank 0 writes the full state."""
        if self.mode != "fsdp":
            if self.is_main:
                write_checkpoint(path, model.state_dict(), optimizer.state_dict(), state)
            return
        tmp = Path(self.on_main(lambda: str(staging_dir(path))))
        write_shards(tmp, get_model_state_dict(wrapped),
                     get_optimizer_state_dict(wrapped, optimizer), state, self.rank)
        self.barrier()  # every rank's files are in place before rank 0 renames the folder
        if self.is_main:
            commit(tmp, path)

    def load_checkpoint(
        self, path: Path, wrapped: nn.Module, model: nn.Module, optimizer: torch.optim.Optimizer
    ) -> dict[str, Any]:
        """Restore weights, optimizer and RNG from ``path`` (either layout, written by any number
        of ranks); return its JSON state. Every rank must call it."""
        if is_sharded(path):
            msd = get_model_state_dict(wrapped)  # this rank's live (sharded) tensors
            state, osd = read_shards(path, msd, get_optimizer_state_dict(wrapped, optimizer),
                                     self.rank)
            set_model_state_dict(wrapped, msd)
            set_optimizer_state_dict(wrapped, optimizer, osd)
            return state
        model_sd, optim_sd, state = read_checkpoint(path, str(self.device))
        model_sd = fill_tied(model, model_sd)
        if self.mode != "fsdp":
            model.load_state_dict(model_sd)
            optimizer.load_state_dict(optim_sd)
            return state
        opts = StateDictOptions(full_state_dict=True)  # FSDP re-shards the full state
        set_model_state_dict(wrapped, {f"model.{k}": v for k, v in model_sd.items()}, options=opts)
        set_optimizer_state_dict(wrapped, optimizer, optim_sd, options=opts)
        return state

    def unwrap(
        self, wrapped: nn.Module, model: nn.Module, skeleton: nn.Module | None
    ) -> nn.Module | None:
        """The trained student as a plain module: ``model`` itself, or for FSDP ``skeleton``
        (a meta-device copy taken before sharding) filled with the gathered weights on rank 0
        (other ranks get None: only rank 0 evaluates and saves)."""
        if self.mode != "fsdp":
            return model
        opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
        sd = get_model_state_dict(wrapped, options=opts)  # collective; full on rank 0 only
        if not self.is_main:
            return None
        buffers = {k: v.detach().cpu() for k, v in model.named_buffers()}  # incl. rotary tables
        plain = skeleton.to_empty(device="cpu")
        plain.load_state_dict(_strip(sd, "model."))
        for name, buf in plain.named_buffers():
            buf.copy_(buffers[name])
        if hasattr(plain, "tie_weights"):
            plain.tie_weights()
        return plain.to(self.device).eval()

    def skeleton(self, model: nn.Module) -> nn.Module | None:
        """For FSDP, a meta-device copy of ``model`` to rebuild the plain student into."""
        return copy.deepcopy(model).to("meta") if self.mode == "fsdp" else None

    def close(self) -> None:
        if self.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _strip(sd: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {k.removeprefix(prefix): v for k, v in sd.items()}


def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The model's repeated blocks (HF ``_no_split_modules`` classes): FSDP's shard units."""
    names = set(getattr(model, "_no_split_modules", None) or [])
    return [m for m in model.modules() if type(m).__name__ in names]


def collective_timeout() -> timedelta:
    """How long a rank waits in a collective: CAPGAP_DIST_TIMEOUT_MIN minutes (default 120)."""
    raw = os.environ.get("CAPGAP_DIST_TIMEOUT_MIN", "120")
    try:
        minutes = float(raw)
    except ValueError:
        minutes = -1.0
    if minutes <= 0:
        raise CapgapError(f"CAPGAP_DIST_TIMEOUT_MIN must be a positive number of minutes, "
                          f"got {raw!r}")
    return timedelta(minutes=minutes)


def setup(mode: ParallelMode = "ddp", device: str | None = None) -> Parallel:
    """This process's :class:`Parallel`; joins the process group when ``WORLD_SIZE > 1``."""
    world = world_size()
    if world == 1:
        dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        return Parallel("none", 1, 0, dev)
    if mode not in ("ddp", "fsdp"):
        raise CapgapError(f"train.parallel must be ddp or fsdp, got {mode!r}")
    if dist.is_initialized():  # joined earlier (distill picks the device before train does):
        # keep the kind of device its backend was chosen for
        cuda = "nccl" in str(dist.get_backend())
    else:
        cuda = torch.cuda.is_available() and device != "cpu"
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(dev)
    if not dist.is_initialized():  # rank 0 alone builds caches and evaluates while the rest
        # wait in a collective: a long wait must not trip the default 10-minute watchdog
        dist.init_process_group("nccl" if cuda else "gloo", timeout=collective_timeout())
    return Parallel(mode, world, dist.get_rank(), dev)
