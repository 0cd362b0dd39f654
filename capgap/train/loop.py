"""The one training loop, shared by pretraining and distillation.

What differs between stages is only the *step function* (how a batch becomes a loss), so
the loop takes one as an argument (a Protocol, not a base class). The loop owns what every
stage needs identically: AdamW with the paper's defaults, cosine schedule with warm-up,
gradient accumulation and clipping, bf16 autocast on CUDA, periodic held-out evaluation,
atomic safetensors checkpoints, exact resume, a progress bar and a metrics JSONL, and (under
torchrun) DDP or FSDP2 over several processes (:mod:`capgap.train.distributed`).

A step that produces a non-finite loss or gradient norm stops the run *before* the update,
so no checkpoint of a bad state is ever written; the error names the last good checkpoint.

Exact resume works because nothing is hidden in Python state: the learning rate is a pure
function of the step, the loader's batch is a pure function of (seed, step), and weights,
optimizer moments and RNG states are checkpointed.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from capgap.errors import CapgapError
from capgap.models.arch import flop_shape
from capgap.runs import RunDir, env_threads
from capgap.train.board import Board, writer_class
from capgap.train.checkpoint import (
    clean_partial,
    rng_state,
    set_rng_state,
)
from capgap.train.distributed import Parallel, StepModule, setup


@dataclass
class OptimConfig:
    """AdamW + cosine schedule. Defaults are the paper's distillation settings."""

    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr`` at the end of the cosine."""
    warmup_frac: float = 0.01
    beta1: float = 0.9
    beta2: float = 0.95
    eps: float = 1e-8
    weight_decay: float = 0.1
    """Applied to matrices only; biases and norm weights get none."""
    grad_clip: float = 1.0

    def validate(self) -> None:
        if self.lr <= 0:
            raise CapgapError(f"optim.lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_frac < 1:
            raise CapgapError(f"optim.warmup_frac must be in [0, 1), got {self.warmup_frac}")


@dataclass
class TrainConfig:
    """How long and how to train; the token budget is the unit of work."""

    tokens: int = 1_000_000
    """Training budget in tokens (rounded up to whole optimizer steps; at least one step)."""
    micro_batch_size: int = 32
    grad_accum: int = 1
    seed: int = 0
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast on CUDA, fp32 on CPU."""
    eval_every: int = 0
    """Steps between held-out evaluations (0: about 5 per run)."""
    eval_tokens: int = 32_768
    checkpoint_every: int = 0
    """Steps between checkpoints (0: about 10 per run)."""
    keep_checkpoints: int = 1
    threads: int = 0
    """torch CPU threads (0: CAPGAP_THREADS or all cores)."""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """Under torchrun (WORLD_SIZE > 1): replicate the model (ddp) or shard it (fsdp, FSDP2)."""
    tensorboard: bool = False
    """Also mirror the logged numbers to DIR/tensorboard/ (pip install 'capgap[tensorboard]')."""
    optim: OptimConfig = field(default_factory=OptimConfig)

    def validate(self) -> None:
        if self.tokens <= 0:
            raise CapgapError(f"train.tokens must be positive, got {self.tokens}")
        if self.micro_batch_size <= 0 or self.grad_accum <= 0:
            raise CapgapError("train.micro_batch_size and train.grad_accum must be positive")
        if self.parallel not in ("ddp", "fsdp"):
            raise CapgapError(f"train.parallel must be ddp or fsdp, got {self.parallel!r}")


WATCH_ONLY = ("tensorboard",)


def result_settings(train: dict[str, Any]) -> dict[str, Any]:
    """``train`` (a :class:`TrainConfig` as a dict) without the fields that only say how a run
    is watched (:data:`WATCH_ONLY`): what a key naming a result hashes, so that turning them
    on keeps the keys of runs already recorded."""
    return {k: v for k, v in train.items() if k not in WATCH_ONLY}


class StepFn(Protocol):
    """Turns one micro-batch (what the loader gives) into a scalar loss plus metrics to log."""

    def __call__(
        self, model: nn.Module, batch: Any
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


class Batches(Protocol):
    """A loader whose batch is a pure function of the micro-step index.

    A batch is a (B, T) tensor of input ids or a dict of tensors with B rows (e.g. ids plus
    cached teacher outputs); under several processes each rank takes its slice of the rows.
    """

    seq_len: int
    batch_size: int

    def batch(self, step: int) -> torch.Tensor | dict[str, torch.Tensor]: ...


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Decay matrices only: no weight decay on biases and norm weights (1-D tensors)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def lr_at(step: int, total: int, cfg: OptimConfig) -> float:
    """Linear warm-up then cosine decay to ``min_lr_ratio * lr``; a pure function of step."""
    warmup = max(1, math.ceil(cfg.warmup_frac * total)) if cfg.warmup_frac > 0 else 0
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * cosine)


def matmul_flops_per_token(model: nn.Module, seq_len: int) -> float:
    """Training FLOPs per token of ``model`` (3 x forward: :class:`capgap.models.arch.FlopShape`)."""
    return flop_shape(model).train_flops(seq_len)


def autocast_for(precision: str, device: torch.device):  # noqa: ANN201 - a context manager
    """bf16 autocast on CUDA when asked (or auto); a no-op context otherwise."""
    use_bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    if use_bf16:
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return torch.autocast(device_type=device.type, enabled=False)


@dataclass
class TrainResult:
    steps: int
    tokens: int
    seconds: float
    tokens_per_s: float
    final_train_loss: float
    last_eval: dict[str, float]
    model: nn.Module | None = None
    """The trained model, unwrapped (under FSDP a rebuilt plain copy on rank 0, None elsewhere)."""


def total_steps_for(cfg: TrainConfig, tokens_per_step: int) -> int:
    """Optimizer steps the budget buys; a budget below one step is refused, not rounded up."""
    if cfg.tokens < tokens_per_step:
        raise CapgapError(
            f"train.tokens={cfg.tokens:,} is less than one optimizer step ({tokens_per_step:,} "
            "tokens = micro_batch_size x grad_accum x seq_len); raise the budget or shrink the batch"
        )
    return math.ceil(cfg.tokens / tokens_per_step)


def make_optimizer(model: nn.Module, o: OptimConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        param_groups(model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
        foreach=False,  # the same kernel every run: bitwise-equal resume on CPU
    )


def _to(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, dict):  # tensors move; shared objects (TeacherRows) already live there
        return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
    return batch.to(device)


def accumulate(
    wrapped: nn.Module, loader: Batches, step: int, cfg: TrainConfig, par: Parallel,
    device: torch.device,
) -> tuple[float, dict[str, Any]]:
    """Forward and backward over the step's ``grad_accum`` micro-batches (this rank's rows).

    Returns the loss and metrics averaged over micro-batches and ranks (each rank sees the
    same number of tokens, so this is the global-batch mean); with several ranks the metrics
    also hold ``loss_by_rank``.
    """
    loss_sum, metrics = 0.0, {}
    for k in range(cfg.grad_accum):
        batch = _to(par.shard(loader.batch(step * cfg.grad_accum + k)), device)
        with par.grad_sync(wrapped, k == cfg.grad_accum - 1), autocast_for(cfg.precision, device):
            loss, m = wrapped(batch)
        (loss / cfg.grad_accum).backward()
        loss_sum += float(loss.detach()) / cfg.grad_accum
        for key, v in m.items():
            metrics[key] = metrics.get(key, 0.0) + float(v) / cfg.grad_accum
    keys = sorted(metrics)
    per_rank = par.gather([loss_sum, *(metrics[k] for k in keys)])
    loss_sum, *values = (sum(col) / par.world for col in zip(*per_rank, strict=True))
    out = dict(zip(keys, values, strict=True))
    if par.world > 1:
        out["loss_by_rank"] = [r[0] for r in per_rank]
    return loss_sum, out


def _diverged(what: str, value: float, step: int, run: RunDir, desc: str) -> CapgapError:
    """Stop before the bad update touches the weights; point at the state to resume from."""
    last = run.latest_checkpoint()
    where = (f"the last good checkpoint is {last}" if last is not None
             else "no checkpoint was written yet")
    return CapgapError(
        f"{desc}: {what} became {value} at step {step + 1}; stopped before updating the "
        f"weights and {where}. Lower optim.lr (or raise warmup_frac), then continue with "
        "--resume --force"
    )


def _resume(run: RunDir, par: Parallel, wrapped: nn.Module, model: nn.Module,
            optimizer: torch.optim.Optimizer) -> tuple[int, float]:
    """(step, elapsed seconds) restored from the run's newest complete checkpoint, if any."""
    if not run.resumed:
        return 0, 0.0

    def newest() -> Path | None:
        clean_partial(run.checkpoint_root)
        return run.latest_checkpoint()

    ckpt = par.on_main(newest)
    if ckpt is None:
        return 0, 0.0
    state = par.load_checkpoint(ckpt, wrapped, model, optimizer)
    step = int(state["step"])
    if par.is_main:
        run.truncate_metrics(step)
        run.log({"event": "resume", "step": step, "checkpoint": ckpt.name})
    return step, float(state.get("elapsed", 0.0))


def _checkpoint(run: RunDir, par: Parallel, wrapped: nn.Module, model: nn.Module,
                optimizer: torch.optim.Optimizer, state: dict[str, Any], keep: int) -> None:
    par.save_checkpoint(run.checkpoint_path(state["step"]), wrapped, model, optimizer, state)
    if par.is_main:
        run.prune_checkpoints(keep)
    par.barrier()


def _log_sharding(run: RunDir, par: Parallel, wrapped: nn.Module) -> None:
    """Record how the student is split over ranks (tests check FSDP really shards)."""
    if par.world == 1:
        return
    params = list(wrapped.parameters())
    local = sum(p.to_local().numel() if hasattr(p, "to_local") else p.numel() for p in params)
    total = sum(p.numel() for p in params)
    dtensors = sum(hasattr(p, "to_local") for p in params)
    all_local = [0] * par.world
    torch.distributed.all_gather_object(all_local, local)
    if par.is_main:
        run.log({"event": "parallel", "mode": par.mode, "world": par.world, "params": total,
                 "local_params": all_local, "dtensor_params": dtensors, "n_params": len(params)})


class Trainer:
    """One model's run, advanced one optimizer step at a time.

    :func:`train` drives one of these to the end; the lockstep driver
    (:mod:`capgap.distill.lockstep`) drives several in step, so they can share the work a
    step's batch implies (one teacher forward for every student). With one process the model
    is trained in place. Under ``torchrun`` (``WORLD_SIZE > 1``) it is wrapped per
    ``cfg.parallel`` (see :mod:`capgap.train.distributed`); only rank 0 writes to ``run``.
    """

    def __init__(
        self,
        model: nn.Module,
        loader: Batches,
        step_fn: StepFn,
        cfg: TrainConfig,
        run: RunDir,
        eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
        desc: str = "train",
        extra_state: dict[str, Any] | None = None,
        progress: bool = True,
        own_rng: bool = False,
    ) -> None:
        """``own_rng``: keep this run's torch RNG state apart from the process's (restored
        before and saved after each step), so runs advanced in turn draw what each would
        draw alone (dropout); it starts from the state at construction (or the checkpoint's)."""
        torch.set_num_threads(cfg.threads or env_threads())
        self.model, self.loader, self.cfg, self.run_dir = model, loader, cfg, run
        self.eval_fn, self.desc, self.extra_state = eval_fn, desc, extra_state or {}
        board = writer_class() if cfg.tensorboard else None  # missing: fail before any write
        self.par = par = setup(cfg.parallel)
        self.device = par.device if par.world > 1 else next(model.parameters()).device
        self.tokens_per_step = loader.batch_size * loader.seq_len * cfg.grad_accum
        self.total_steps = total_steps_for(cfg, self.tokens_per_step)
        self.eval_every = cfg.eval_every or max(1, self.total_steps // 5)
        self.ckpt_every = cfg.checkpoint_every or max(1, self.total_steps // 10)
        self.skeleton = par.skeleton(model)
        self.wrapped = par.wrap(StepModule(model, step_fn))
        self.optimizer = make_optimizer(self.wrapped, cfg.optim)
        _log_sharding(run, par, self.wrapped)
        self.step, self.elapsed = _resume(run, par, self.wrapped, model, self.optimizer)
        self.board = Board(board, run.path, self.step) if board and par.is_main else None
        self.rng = rng_state() if own_rng else None
        self.flops_per_token = matmul_flops_per_token(model, loader.seq_len)
        self.wrapped.train()
        self.last_loss, self.last_eval = float("nan"), {}
        self.bar = tqdm(total=self.total_steps, initial=self.step, desc=desc, unit="step",
                        dynamic_ncols=True, mininterval=1.0, leave=False,
                        disable=(not progress or not par.is_main
                                 or os.environ.get("CAPGAP_NO_PROGRESS") == "1"))
        self._window = (time.perf_counter(), 0)

    @property
    def done(self) -> bool:
        return self.step >= self.total_steps

    def advance(self) -> None:
        """One optimizer step: accumulate, clip, update, log, evaluate and checkpoint when due."""
        if self.rng is None:
            return self._advance()
        set_rng_state(self.rng)
        try:
            self._advance()
        finally:
            self.rng = rng_state()

    def _advance(self) -> None:
        cfg, par, step = self.cfg, self.par, self.step
        t0 = time.perf_counter()
        lr = lr_at(step, self.total_steps, cfg.optim)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        loss, metrics = accumulate(self.wrapped, self.loader, step, cfg, par, self.device)
        if not math.isfinite(loss):
            raise _diverged("the loss", loss, step, self.run_dir, self.desc)
        grad_norm = par.clip_grad_norm(self.wrapped, cfg.optim.grad_clip)
        if not math.isfinite(grad_norm):
            raise _diverged("the gradient norm", grad_norm, step, self.run_dir, self.desc)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step = step = step + 1
        dt = time.perf_counter() - t0
        self.elapsed += dt
        self.last_loss = loss
        self._progress(loss)
        record = {"step": step, "tokens": step * self.tokens_per_step, "loss": loss, "lr": lr,
                  "grad_norm": grad_norm, "tokens_per_s": self.tokens_per_step / dt, **metrics}
        if self.eval_fn is not None and (step % self.eval_every == 0 or self.done):
            self.wrapped.eval()
            with par.gathered(self.wrapped):  # every rank evaluates (FSDP needs all in lockstep)
                self.last_eval = self.eval_fn(self.model)
            self.wrapped.train()
            record.update({f"val_{k}": v for k, v in self.last_eval.items()})
        if par.is_main:
            self.run_dir.log(record)
        if self.board is not None:
            self.board.log(record)
        if step % self.ckpt_every == 0 and not self.done:
            state = {"step": step, "elapsed": self.elapsed,
                     "tokens": step * self.tokens_per_step, **self.extra_state}
            _checkpoint(self.run_dir, par, self.wrapped, self.model, self.optimizer, state,
                        cfg.keep_checkpoints)

    def _progress(self, loss: float) -> None:
        """The bar's tokens/s over a sliding window of about 5 seconds."""
        start, tokens = self._window
        tokens += self.tokens_per_step
        now = time.perf_counter()
        tok_s = tokens / max(now - start, 1e-9)
        self._window = (now, 0) if now - start > 5 else (start, tokens)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{tok_s:,.0f}",
                             gflops=f"{tok_s * self.flops_per_token / 1e9:.1f}")

    def run(self) -> TrainResult:
        """Advance to the end of the budget and :meth:`finish`."""
        while not self.done:
            self.advance()
        return self.finish()

    def finish(self) -> TrainResult:
        """The result, with the trained model unwrapped (a plain copy on rank 0 under FSDP)."""
        self.bar.close()
        if self.board is not None:
            self.board.close()
        self.wrapped.eval()
        plain = self.par.unwrap(self.wrapped, self.model, self.skeleton)
        tokens = self.total_steps * self.tokens_per_step
        return TrainResult(steps=self.total_steps, tokens=tokens, seconds=self.elapsed,
                           tokens_per_s=tokens / max(self.elapsed, 1e-9),
                           final_train_loss=self.last_loss, last_eval=self.last_eval, model=plain)


def train(model: nn.Module, loader: Batches, step_fn: StepFn, cfg: TrainConfig, run: RunDir,
          **options: Any) -> TrainResult:
    """Train ``model`` for ``cfg.tokens`` tokens, resuming from ``run`` if possible;
    ``options`` are :class:`Trainer`'s (eval_fn, desc, extra_state, progress, own_rng).

    Use ``TrainResult.model`` afterwards: under FSDP it is a plain copy.
    """
    return Trainer(model, loader, step_fn, cfg, run, **options).run()
