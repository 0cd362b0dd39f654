"""The one training loop, shared by pretraining and distillation.

What differs between stages is only the *step function* (how a batch becomes a loss), so
the loop takes one as an argument (a Protocol, not a base class). The loop owns what every
stage needs identically: AdamW with the paper's defaults, cosine schedule with warm-up,
gradient accumulation and clipping, bf16 autocast on CUDA, periodic held-out evaluation,
atomic safetensors checkpoints, exact resume, a progress bar and a metrics JSONL.

Exact resume works because nothing is hidden in Python state: the learning rate is a pure
function of the step, the loader's batch is a pure function of (seed, step), and weights,
optimizer moments and RNG states are checkpointed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import nn
from tqdm.auto import tqdm

from capgap.errors import CapgapError
from capgap.runs import RunDir
from capgap.train.checkpoint import clean_partial, load_checkpoint, save_checkpoint


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
    """Training budget in tokens (rounded up to whole optimizer steps)."""
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
    optim: OptimConfig = field(default_factory=OptimConfig)

    def validate(self) -> None:
        if self.tokens <= 0:
            raise CapgapError(f"train.tokens must be positive, got {self.tokens}")
        if self.micro_batch_size <= 0 or self.grad_accum <= 0:
            raise CapgapError("train.micro_batch_size and train.grad_accum must be positive")


class StepFn(Protocol):
    """Turns one micro-batch into a scalar loss plus metrics to log."""

    def __call__(
        self, model: nn.Module, input_ids: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


class Batches(Protocol):
    """A loader whose batch is a pure function of the micro-step index."""

    seq_len: int
    batch_size: int

    def batch(self, step: int) -> torch.Tensor: ...


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
    """Training FLOPs per token: 6 x matmul weights + attention scores (PaLM appendix B)."""
    weights = 0
    for m in model.modules():
        w = getattr(m, "weight", None)
        if isinstance(w, torch.Tensor) and w.ndim == 2 and not isinstance(m, nn.Embedding):
            weights += w.numel()
    cfg = getattr(model, "config", None)
    layers = getattr(cfg, "num_hidden_layers", 0) or 0
    hidden = getattr(cfg, "hidden_size", 0) or 0
    return 6.0 * weights + 12.0 * layers * hidden * seq_len


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


def train(
    model: nn.Module,
    loader: Batches,
    step_fn: StepFn,
    cfg: TrainConfig,
    run: RunDir,
    eval_fn: Callable[[nn.Module], dict[str, float]] | None = None,
    desc: str = "train",
    extra_state: dict[str, Any] | None = None,
) -> TrainResult:
    """Train ``model`` in place for ``cfg.tokens`` tokens, resuming from ``run`` if possible."""
    from capgap.runs import env_threads

    torch.set_num_threads(cfg.threads or env_threads())
    device = next(model.parameters()).device
    tokens_per_step = loader.batch_size * loader.seq_len * cfg.grad_accum
    total_steps = max(1, math.ceil(cfg.tokens / tokens_per_step))
    eval_every = cfg.eval_every or max(1, total_steps // 5)
    ckpt_every = cfg.checkpoint_every or max(1, total_steps // 10)
    o = cfg.optim
    optimizer = torch.optim.AdamW(
        param_groups(model, o.weight_decay), lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps,
        foreach=False,  # the same kernel every run: bitwise-equal resume on CPU
    )
    step, elapsed = 0, 0.0
    if run.resumed:
        clean_partial(run.checkpoint_root)
        ckpt = run.latest_checkpoint()
        if ckpt is not None:
            state = load_checkpoint(ckpt, model, optimizer)
            step, elapsed = int(state["step"]), float(state.get("elapsed", 0.0))
            run.truncate_metrics(step)
            run.log({"event": "resume", "step": step})
    flops_per_token = matmul_flops_per_token(model, loader.seq_len)
    model.train()
    last_loss, last_eval = float("nan"), {}
    bar = tqdm(total=total_steps, initial=step, desc=desc, unit="step", dynamic_ncols=True,
               mininterval=1.0, leave=False)
    window_t, window_tokens = time.perf_counter(), 0
    while step < total_steps:
        t0 = time.perf_counter()
        lr = lr_at(step, total_steps, o)
        for g in optimizer.param_groups:
            g["lr"] = lr
        metrics: dict[str, float] = {}
        loss_sum = 0.0
        for k in range(cfg.grad_accum):
            input_ids = loader.batch(step * cfg.grad_accum + k).to(device)
            with autocast_for(cfg.precision, device):
                loss, m = step_fn(model, input_ids)
            (loss / cfg.grad_accum).backward()
            loss_sum += float(loss.detach()) / cfg.grad_accum
            for key, v in m.items():
                metrics[key] = metrics.get(key, 0.0) + float(v) / cfg.grad_accum
        if not math.isfinite(loss_sum):
            raise CapgapError(f"{desc}: loss became {loss_sum} at step {step}; lower optim.lr")
        grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), o.grad_clip))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        dt = time.perf_counter() - t0
        elapsed += dt
        window_tokens += tokens_per_step
        last_loss = loss_sum
        now = time.perf_counter()
        tok_s = window_tokens / max(now - window_t, 1e-9)
        if now - window_t > 5:
            window_t, window_tokens = now, 0
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum:.3f}", tok_s=f"{tok_s:,.0f}",
                        gflops=f"{tok_s * flops_per_token / 1e9:.1f}")
        record = {"step": step, "tokens": step * tokens_per_step, "loss": loss_sum, "lr": lr,
                  "grad_norm": grad_norm, "tokens_per_s": tokens_per_step / dt, **metrics}
        if eval_fn is not None and (step % eval_every == 0 or step == total_steps):
            model.eval()
            last_eval = eval_fn(model)
            model.train()
            record.update({f"val_{k}": v for k, v in last_eval.items()})
        run.log(record)
        if step % ckpt_every == 0 and step < total_steps:
            state = {"step": step, "elapsed": elapsed, "tokens": step * tokens_per_step,
                     **(extra_state or {})}
            save_checkpoint(run.checkpoint_path(step), model, optimizer, state)
            run.prune_checkpoints(cfg.keep_checkpoints)
    bar.close()
    model.eval()
    tokens = total_steps * tokens_per_step
    return TrainResult(steps=total_steps, tokens=tokens, seconds=elapsed,
                       tokens_per_s=tokens / max(elapsed, 1e-9), final_train_loss=last_loss,
                       last_eval=last_eval)
