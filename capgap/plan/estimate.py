"""Compute and memory plan of an LLM-scale distillation run, before renting the GPUs.

FLOPs (per token; "dense" = what a dense attention kernel executes, PaLM's MFU convention):

* forward of a model:   F = 2·N_mm + 4·L·d_attn·S  (:class:`capgap.models.arch.FlopShape`, the
  one formula: N_mm = weights used in matmuls incl. the LM head, L layers, d_attn =
  heads·head_dim, S the sequence length; the attention term counted whole, as MFU figures do).
* distillation:         teacher forward F_t + student training 3·F_s (backward = 2× forward).
* GPU-hours = D·(F_t + 3·F_s) / (MFU · peak FLOP/s); recomputation under activation
  checkpointing is not model FLOPs — it shows up as a lower achievable MFU.

Memory per GPU (bytes, K GPUs, Ψ = student params; ZeRO paper accounting, bf16 mixed
precision with AdamW): bf16 weights 2Ψ, bf16 grads 2Ψ, fp32 master + two moments 12Ψ.
DDP keeps all 16Ψ; ZeRO-2 / FSDP SHARD_GRAD_OP 2Ψ + 14Ψ/K; ZeRO-3 / FSDP FULL_SHARD
16Ψ/K (+ two gathered layers in flight); CPU offload moves the 12Ψ optimizer state to host.
Teacher: frozen bf16, 2·N_t replicated or 2·N_t/K sharded.

Activations (bf16, flash attention so no S² scores, no dropout), bytes per token per layer:
  A_layer = 2·(6h + 2·d_kv + c·f),  c = 4 for gated (SwiGLU) MLPs, 2 for GELU MLPs
(norm inputs 2h, QKV input h, Q h, K/V d_kv each, attention output h, MLP input h, and
c·f MLP intermediates). Per micro-batch of b sequences of S tokens:
  without checkpointing  b·S·(L·A_layer + logits)
  with per-layer checkpointing  b·S·(L·2h + A_layer + logits)
logits = 12·V bytes/token: student fp32 logits and their gradient, teacher fp32 probabilities
(a chunked KD loss, ``capgap.distill.chunked``, cuts this to a few chunks).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
from transformers import PretrainedConfig

from capgap.models.arch import FlopShape, adapter_for, count_shape, geometry, matmul_params

GiB = 1024**3
# Least sharded first: the first that fits is the plan (less communication, simpler setup).
STRATEGIES = (
    ("DDP", "replicated"),
    ("ZeRO-2 / FSDP SHARD_GRAD_OP", "replicated"),
    ("ZeRO-3 / FSDP FULL_SHARD", "replicated"),
    ("ZeRO-3 / FSDP FULL_SHARD", "sharded"),
    ("ZeRO-3 + CPU offload", "sharded"),
)


@dataclass(frozen=True)
class ModelShape:
    """What the estimates need to know about one model."""

    params: int
    matmul_params: int
    layers: int
    hidden: int
    d_attn: int
    d_kv: int
    ffn: int
    vocab: int
    gated: bool

    @classmethod
    def of(cls, config: PretrainedConfig) -> ModelShape:
        """The estimates' view of ``config``, counted by the architecture registry."""
        g, adapter = geometry(config), adapter_for(config)
        return cls(count_shape(config).total, matmul_params(config), g.n_layers, g.hidden,
                   g.n_heads * g.head_dim, g.n_kv * g.head_dim, g.ffn, config.vocab_size,
                   adapter.gated)

    @property
    def flops(self) -> FlopShape:
        """What its FLOPs per token depend on: every layer has the same attention width."""
        return FlopShape(self.matmul_params, self.layers * self.d_attn)

    def forward_flops(self, seq_len: int) -> float:
        """Forward FLOPs per token (module docstring)."""
        return self.flops.forward_flops(seq_len)

    def layer_activation_bytes(self) -> int:
        """Bytes per token kept for backward by one layer (module docstring)."""
        return 2 * (6 * self.hidden + 2 * self.d_kv + (4 if self.gated else 2) * self.ffn)


@dataclass(frozen=True)
class Option:
    """Memory per GPU of one sharding choice, in GiB."""

    strategy: str
    teacher: str
    checkpointing: bool
    weights: float
    grads: float
    optimizer: float
    activations: float
    teacher_mem: float
    buffers: float
    total: float
    fits: bool
    cpu_per_node: float = 0.0  # host memory offloaded optimizer state needs


@dataclass
class Plan:
    """The whole estimate; ``choice`` is the least-sharded option that fits (or None)."""

    teacher: dict
    student: dict
    tokens: float
    gpus: int
    gpu_mem_gib: float
    seq_len: int
    micro_batch: int
    mfu: float
    gpu_flops: float
    flops: dict[str, float]
    gpu_hours: float
    wall_days: float
    options: list[Option] = field(default_factory=list)
    choice: Option | None = None
    usable_fraction: float = 0.9

    def to_dict(self) -> dict:
        return asdict(self) | {"gpu_days": self.gpu_hours / 24}


def distill_flops(teacher: ModelShape, student: ModelShape, tokens: float,
                  seq_len: int) -> dict[str, float]:
    """Model FLOPs of distilling on ``tokens``: teacher forward + student training."""
    t = teacher.flops.forward_flops(seq_len) * tokens
    s = student.flops.train_flops(seq_len) * tokens
    return {"teacher_forward": t, "student_train": s, "total": t + s,
            "per_token": (t + s) / tokens,
            "simple_2NtD_6NsD": 2 * teacher.params * tokens + 6 * student.params * tokens}


def memory_options(teacher: ModelShape, student: ModelShape, gpus: int, gpu_mem_gib: float,
                   seq_len: int, micro_batch: int, usable_fraction: float = 0.9,
                   gpus_per_node: int = 8) -> list[Option]:
    """Every sharding x teacher placement x checkpointing option, least sharded first.

    ``usable_fraction`` of the card is budgeted (CUDA context, allocator fragmentation).
    """
    psi, k = student.params, gpus
    tokens = micro_batch * seq_len
    logits = 12 * max(student.vocab, teacher.vocab)
    full = tokens * (student.layers * student.layer_activation_bytes() + logits)
    ckpt = tokens * (student.layers * 2 * student.hidden + student.layer_activation_bytes() + logits)
    layer_bytes = 2 * max(student.params / student.layers, teacher.params / teacher.layers)
    out = []
    for strategy, placement in STRATEGIES:
        w, g, o, cpu = _states(strategy, psi, k)
        gathered = "ZeRO-3" in strategy or placement == "sharded"
        buffers = 2 * layer_bytes if gathered else 0.0  # prefetched full layers in flight
        t_mem = 2 * teacher.params / (k if placement == "sharded" else 1)
        for checkpointing in (False, True):
            act = ckpt if checkpointing else full
            total = w + g + o + act + t_mem + buffers
            out.append(Option(strategy, placement, checkpointing, *(x / GiB for x in (
                w, g, o, act, t_mem, buffers, total)), total <= usable_fraction * gpu_mem_gib * GiB,
                cpu * min(k, gpus_per_node) / GiB))
    return out


def _states(strategy: str, psi: int, k: int) -> tuple[float, float, float, float]:
    """(weights, grads, optimizer on GPU, optimizer on host per GPU) bytes for the student."""
    if strategy == "DDP":
        return 2 * psi, 2 * psi, 12 * psi, 0.0
    if strategy.startswith("ZeRO-2"):
        return 2 * psi, 2 * psi / k, 12 * psi / k, 0.0
    if "offload" in strategy:
        return 2 * psi / k, 2 * psi / k, 0.0, 12 * psi / k
    return 2 * psi / k, 2 * psi / k, 12 * psi / k, 0.0


def plan(teacher: PretrainedConfig, student: PretrainedConfig, tokens: float, gpus: int,
         gpu_mem_gib: float, mfu: float = 0.4, gpu_flops: float = 312e12, seq_len: int = 4096,
         micro_batch: int = 1, usable_fraction: float = 0.9) -> Plan:
    """FLOPs, GPU-hours and the least-sharded memory layout that fits (module docstring)."""
    t, s = ModelShape.of(teacher), ModelShape.of(student)
    flops = distill_flops(t, s, tokens, seq_len)
    gpu_hours = flops["total"] / (mfu * gpu_flops) / 3600
    options = memory_options(t, s, gpus, gpu_mem_gib, seq_len, micro_batch, usable_fraction)
    return Plan(asdict(t), asdict(s), tokens, gpus, gpu_mem_gib, seq_len, micro_batch, mfu,
                gpu_flops, flops, gpu_hours, gpu_hours / gpus / 24, options,
                next((o for o in options if o.fits), None), usable_fraction)


def measured_flops(model: torch.nn.Module, batch: int, seq_len: int, train: bool) -> int:
    """FLOPs torch's FlopCounterMode counts for one forward (+ backward if ``train``)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.zeros(batch, seq_len, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        if train:
            model(input_ids=x).logits.float().sum().backward()
        else:
            with torch.no_grad():
                model(input_ids=x)
    return counter.get_total_flops()
