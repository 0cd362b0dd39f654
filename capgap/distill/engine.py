"""Distil a student from a frozen teacher with the shared training loop.

``distill(cfg, out)`` loads teacher and student (any path :func:`load_any_model` accepts),
checks they share a vocabulary, tokenises the corpus once with the *student's* tokenizer,
and trains the student on ``alpha * CE + (1 - alpha) * D(teacher || student)`` through the
chunked loss (no full-vocabulary logits of either model ever exist). ``alpha = 1`` needs
no teacher: it is the "same student, no distillation" baseline the sweep runs beside every
cell. The run folder follows the shared convention and ends with ``model/`` and the
held-out scores in ``DONE.json``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from capgap.errors import CapgapError
from capgap.models.params import count_params
from capgap.runs import RunDir
from capgap.train.loop import OptimConfig, TrainConfig, autocast_for, train
from capgap.train.pretrain import EvalConfig


@dataclass
class ObjectiveConfig:
    """loss = alpha * CE(student, labels) + (1 - alpha) * tau^2 * D(teacher || student)."""

    alpha: float = 0.5
    temperature: float = 1.0
    divergence: str = "soft_ce"
    """soft_ce (the paper), forward_kl, reverse_kl, jsd, skew_forward_kl, skew_reverse_kl, tv."""
    divergence_kwargs: dict[str, float] = field(default_factory=dict)
    """E.g. {beta: 0.5} for jsd, {skew: 0.1} for the skew KLs."""
    chunk_size: int = 1024
    """Tokens per vocabulary chunk; caps logits memory at chunk_size x vocab per model."""

    def validate(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise CapgapError(f"objective.alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise CapgapError(f"objective.temperature must be positive, got {self.temperature}")
        from capgap.distill.losses import get_divergence

        get_divergence(self.divergence)


@dataclass
class DistillDataConfig:
    corpus: str = "default"
    """'default' (embedded corpus), a .txt/.jsonl file or folder, or hf:NAME."""
    seq_len: int = 0
    """Training sequence length (0: the student's context, at most 1024)."""


def _default_train() -> TrainConfig:
    return TrainConfig(tokens=400_000, micro_batch_size=32, optim=OptimConfig())


@dataclass
class DistillConfig:
    """``capgap distill``: who teaches whom, on what, for how many tokens."""

    student: str = ""
    """The student's model folder (e.g. from ``capgap prune``) or a run folder."""
    teacher: str | None = None
    """The teacher's model folder; not needed when objective.alpha == 1."""
    teacher_dtype: str = "auto"
    """auto (bf16 on CUDA, fp32 on CPU), fp32, bf16, fp16: the frozen teacher may run lower."""
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: TrainConfig = field(default_factory=_default_train)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if not self.student:
            raise CapgapError("distill: a student is required (--student DIR)")
        if self.objective.alpha < 1 and not self.teacher:
            raise CapgapError("distill: a teacher is required unless objective.alpha == 1")


@dataclass
class DistillResult:
    val_loss: float
    val_ppl: float
    val_bpb: float
    student_params: int
    student_params_non_embedding: int
    teacher_params: int | None
    tokens: int
    seconds: float
    tokens_per_s: float
    model_dir: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _teacher_dtype(name: str, device: torch.device) -> torch.dtype:
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in table:
        raise CapgapError(f"teacher_dtype must be auto, {', '.join(table)}; got {name!r}")
    return table[name]


def make_step(teacher: nn.Module | None, obj: ObjectiveConfig):  # noqa: ANN201 - a StepFn
    """The training step: the chunked distillation loss on one micro-batch."""
    from capgap.distill.chunked import distill_loss

    def step(student: nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
        out = distill_loss(student, teacher if obj.alpha < 1 else None, input_ids,
                           alpha=obj.alpha, temperature=obj.temperature,
                           divergence=obj.divergence, chunk_size=obj.chunk_size,
                           **obj.divergence_kwargs)
        metrics = {"ce": float(out.ce)}
        if out.kd is not None:
            metrics["kd"] = float(out.kd)
        return out.loss, metrics

    return step


def load_pair(cfg: DistillConfig, device: torch.device) -> tuple[nn.Module, Any, nn.Module | None]:
    """Student (trainable, fp32), its tokenizer, and the frozen teacher (or None)."""
    from capgap.distill.chunked import check_vocab
    from capgap.models.anymodel import load_any_model

    student, tokenizer = load_any_model(cfg.student)
    if tokenizer is None:
        raise CapgapError(f"{cfg.student} has no tokenizer; the student's tokenizer feeds the data")
    student = student.to(device=device, dtype=torch.float32)
    teacher = None
    if cfg.objective.alpha < 1:
        teacher, t_tok = load_any_model(cfg.teacher)
        teacher = teacher.to(device=device, dtype=_teacher_dtype(cfg.teacher_dtype, device))
        teacher.eval().requires_grad_(False)
        check_vocab(student, teacher, tokenizer, t_tok)
    return student, tokenizer, teacher


def distill(cfg: DistillConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
            device: str | None = None) -> DistillResult:
    """Run (or resume) one distillation into ``out``; a finished run is returned as is."""
    from capgap.data import PackedLoader, TokenStore, eval_batches, load_corpus, validation_text
    from capgap.evaluate.heldout import evaluate_text, model_context
    from capgap.models.anymodel import save_any_model
    from capgap.runs import is_complete

    if resume and is_complete(out):
        return DistillResult(**RunDir(Path(out), True, True).summary()["result"])
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(cfg.train.seed)
    student, tokenizer, teacher = load_pair(cfg, dev)  # bad paths fail before --out is touched
    run = RunDir.open(out, resume=resume, overwrite=overwrite)
    run.write_config(cfg)
    corpus = load_corpus(cfg.data.corpus)
    store = TokenStore.build_or_load(corpus, tokenizer)
    seq_len = cfg.data.seq_len or model_context(student)
    loader = PackedLoader(store.train, seq_len=seq_len, batch_size=cfg.train.micro_batch_size,
                          seed=cfg.train.seed)
    step = make_step(teacher, cfg.objective)

    def quick_eval(m: nn.Module) -> dict[str, float]:
        from capgap.distill.chunked import lm_loss

        with torch.no_grad(), autocast_for(cfg.train.precision, dev):
            losses = [float(lm_loss(m, x.to(dev)).loss) for x in
                      eval_batches(store.val, seq_len, cfg.eval.batch_size, cfg.train.eval_tokens)]
        return {"loss": sum(losses) / max(len(losses), 1)}

    n_s = count_params(student)
    t0 = time.perf_counter()
    desc = f"distill {n_s.total / 1e6:.2f}M" + ("" if teacher is None else
                                                f" <- {count_params(teacher).total / 1e6:.2f}M")
    result = train(student, loader, step, cfg.train, run, eval_fn=quick_eval, desc=desc)
    final = evaluate_text(student, tokenizer, validation_text(corpus, cfg.eval.max_bytes or None),
                          seq_len, cfg.eval.batch_size)
    model_dir = save_any_model(student, tokenizer, run.path / "model", overwrite=True)
    res = DistillResult(
        val_loss=final.loss, val_ppl=final.ppl, val_bpb=final.bpb, student_params=n_s.total,
        student_params_non_embedding=n_s.non_embedding,
        teacher_params=None if teacher is None else count_params(teacher).total,
        tokens=result.tokens, seconds=result.seconds, tokens_per_s=result.tokens_per_s,
        model_dir=str(model_dir))
    run.log({"event": "final_eval", "step": result.steps, **final.to_dict(),
             "wall_s": time.perf_counter() - t0})
    run.finish({"result": res.to_dict(), "heldout": final.to_dict()})
    return res
