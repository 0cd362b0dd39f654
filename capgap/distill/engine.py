"""Distil a student from a frozen teacher with the shared training loop.

``distill(cfg, out)`` loads teacher and student (any path :func:`load_any_model` accepts),
checks they share a vocabulary, tokenises the corpus once with the *student's* tokenizer,
and trains the student on ``alpha * CE + (1 - alpha) * D(teacher || student)`` through the
chunked loss (no full-vocabulary logits of either model ever exist). ``alpha = 1`` needs
no teacher: it is the "same student, no distillation" baseline the sweep runs beside every
cell. ``init: scratch`` trains a randomly initialised student of the same shape (the paper's
named limit: its students were always initialised by pruning). ``teacher_cache`` replaces
the online teacher by its top-k outputs computed once (:mod:`capgap.distill.cache`).

The run folder follows the shared convention and ends with ``model/`` (in the student's own
format: a vanilla HF folder or the capgap pruned format), ``metrics.json`` and
``DONE.json``. Under ``torchrun`` the student is trained with DDP or FSDP2
(:mod:`capgap.train.distributed`) and only rank 0 writes.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from capgap import config as cfgmod
from capgap.data import PackedLoader, TokenStore, eval_batches, load_corpus, validation_text
from capgap.data.stream import is_token_store_spec, store_path, validation_text_of
from capgap.data.tokenizer import tokenizer_hash
from capgap.distill.cache import (
    CachedTeacherLoader,
    TeacherCache,
    TeacherCacheConfig,
    build_or_load,
)
from capgap.distill.chunked import check_shared_vocab, distill_loss
from capgap.distill.losses import TopKTeacher, get_divergence
from capgap.errors import CapgapError
from capgap.evaluate.heldout import EvalConfig, evaluate_text, model_context
from capgap.io import write_json
from capgap.models.anymodel import load_any_model, save_any_model
from capgap.models.init import reinitialise
from capgap.models.params import count_params
from capgap.runs import RunDir, is_complete
from capgap.train.distributed import Parallel, setup
from capgap.train.loop import (
    OptimConfig,
    TrainConfig,
    Trainer,
    TrainResult,
    autocast_for,
    total_steps_for,
)
from capgap.train.loss import mean_lm_loss


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
    """Tokens per vocabulary chunk; caps logits memory at chunk_size x vocab per model. On a
    CPU the loss runs in smaller cache-sized passes within it
    (:func:`capgap.train.loss.rows_per_pass`)."""

    def validate(self) -> None:
        if not 0 <= self.alpha <= 1:
            raise CapgapError(f"objective.alpha must be in [0, 1], got {self.alpha}")
        if self.temperature <= 0:
            raise CapgapError(f"objective.temperature must be positive, got {self.temperature}")
        get_divergence(self.divergence)


@dataclass
class DistillDataConfig:
    corpus: str = "default"
    """'default' (embedded corpus), a .txt/.jsonl file or folder, hf:NAME, or tokens:PATH (a
    store built by ``capgap data stream``, for mixtures too large to hold in memory)."""
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
    init: Literal["pretrained", "scratch"] = "pretrained"
    """pretrained: train the given student weights; scratch: re-initialise them first."""
    data: DistillDataConfig = field(default_factory=DistillDataConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    teacher_cache: TeacherCacheConfig = field(default_factory=TeacherCacheConfig)
    train: TrainConfig = field(default_factory=_default_train)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def validate(self) -> None:
        if not self.student:
            raise CapgapError("distill: a student is required (--student DIR)")
        if self.objective.alpha < 1 and not self.teacher:
            raise CapgapError("distill: a teacher is required unless objective.alpha == 1")
        if self.init not in ("pretrained", "scratch"):
            raise CapgapError(f"init must be pretrained or scratch, got {self.init!r}")


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
    final_train_loss: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def metrics(self) -> dict[str, Any]:
        """What ``metrics.json`` holds: the numbers a plot or table needs, flat."""
        return {"final_train_loss": self.final_train_loss, "val_loss": self.val_loss,
                "val_ppl": self.val_ppl, "val_bpb": self.val_bpb, "tokens": self.tokens,
                "seconds": self.seconds, "tokens_per_s": self.tokens_per_s,
                "params": self.student_params,
                "params_non_embedding": self.student_params_non_embedding,
                "teacher_params": self.teacher_params}


def _teacher_dtype(name: str, device: torch.device) -> torch.dtype:
    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if name not in table:
        raise CapgapError(f"teacher_dtype must be auto, {', '.join(table)}; got {name!r}")
    return table[name]


def make_step(teacher: nn.Module | None, obj: ObjectiveConfig):  # noqa: ANN201 - a StepFn
    """The training step: the chunked distillation loss on one micro-batch.

    A batch is input ids (B, T), or a dict that also carries cached teacher rows
    (:class:`~capgap.distill.cache.CachedTeacherLoader`), in which case no teacher runs, or
    the teacher's side computed once for several students
    (:class:`~capgap.distill.lockstep.SharedTeacherLoader`), in which case no teacher runs here.
    """
    def step(student: nn.Module, batch: torch.Tensor | dict) -> tuple[torch.Tensor, dict]:
        topk = rows = None
        if isinstance(batch, dict):
            if "t_indices" in batch:
                topk = TopKTeacher(batch["t_indices"], batch["t_logp"], batch["t_other"])
            rows = batch.get("t_rows")
            batch = batch["input_ids"]
        out = distill_loss(student, teacher if obj.alpha < 1 and topk is None else None, batch,
                           alpha=obj.alpha, temperature=obj.temperature,
                           divergence=obj.divergence, chunk_size=obj.chunk_size, teacher_topk=topk,
                           teacher_rows=rows, **obj.divergence_kwargs)
        metrics = {"ce": float(out.ce)}
        if out.kd is not None:
            metrics["kd"] = float(out.kd)
        return out.loss, metrics

    return step


def load_student(cfg: DistillConfig, device: torch.device) -> tuple[nn.Module, Any]:
    """The student (trainable, fp32; re-initialised for ``init: scratch``) and its tokenizer."""
    student, tokenizer = load_any_model(cfg.student)
    if tokenizer is None:
        raise CapgapError(f"{cfg.student} has no tokenizer; the student's tokenizer feeds the data")
    if cfg.init == "scratch":
        reinitialise(student, cfg.train.seed)
    return student.to(device=device, dtype=torch.float32), tokenizer


def load_teacher(cfg: DistillConfig, device: torch.device) -> tuple[nn.Module | None, Any]:
    """The frozen teacher (eval mode, no gradients) and its tokenizer; None when alpha == 1."""
    if cfg.objective.alpha >= 1:
        return None, None
    teacher, tokenizer = load_any_model(cfg.teacher)
    teacher = teacher.to(device=device, dtype=_teacher_dtype(cfg.teacher_dtype, device))
    return teacher.eval().requires_grad_(False), tokenizer


def load_pair(cfg: DistillConfig, device: torch.device) -> tuple[nn.Module, Any, nn.Module | None]:
    """Student (trainable, fp32), its tokenizer, and the frozen teacher (or None)."""
    student, tokenizer = load_student(cfg, device)
    teacher, t_tok = load_teacher(cfg, device)
    if teacher is not None:
        check_shared_vocab(student, teacher, tokenizer, t_tok)
    return student, tokenizer, teacher


def size_warning(student: nn.Module, teacher: nn.Module | None) -> str | None:
    """A teacher smaller than its student is allowed (the law's own grid never makes one)."""
    if teacher is None:
        return None
    n_s, n_t = count_params(student).total, count_params(teacher).total
    if n_t >= n_s:
        return None
    return (f"the teacher ({n_t:,} params) is smaller than the student ({n_s:,}); "
            "distilling anyway")


def _open_run(cfg: DistillConfig, out: str | Path, resume: bool, overwrite: bool, force: bool,
              par: Parallel, relocatable: tuple[str, ...] = ()) -> RunDir:
    """Rank 0 opens the folder and checks the config; every rank gets a handle or the error."""
    def open_main() -> tuple[bool, bool]:
        run = RunDir.open(out, resume=resume, overwrite=overwrite)
        if not run.complete:
            run.write_config(cfg, force=force, relocatable=relocatable)
        return run.resumed, run.complete

    resumed, complete = par.on_main(open_main)
    return RunDir(Path(out), resumed, complete)


def _warn(run: RunDir, par: Parallel, message: str | None) -> None:
    if message is not None and par.is_main:
        print(f"capgap distill: warning: {message}", file=sys.stderr)
        run.log({"event": "warning", "message": message})


def _train_loader(cfg: DistillConfig, store: Any, seq_len: int, teacher: nn.Module | None,
                  par: Parallel) -> Any:
    """The packed loader, wrapped with the teacher cache when it is enabled."""
    loader = PackedLoader(store.train, seq_len=seq_len, batch_size=cfg.train.micro_batch_size,
                          seed=cfg.train.seed)
    tc = cfg.teacher_cache
    if not tc.enabled or teacher is None:
        return loader
    tc.validate()
    micro = total_steps_for(cfg.train, loader.tokens_per_step * cfg.train.grad_accum)
    micro *= cfg.train.grad_accum
    path = par.on_main(lambda: build_or_load(teacher, loader, micro, tc, cfg.objective.temperature,
                                             store.path.name).path)
    return CachedTeacherLoader(loader, TeacherCache(path))


@dataclass
class Session:
    """One student's distillation, set up and ready to train: what :func:`distill` runs
    alone and :func:`~capgap.distill.lockstep.distill_lockstep` runs beside others."""

    cfg: DistillConfig
    run: RunDir
    student: nn.Module
    tokenizer: Any
    teacher: nn.Module | None
    seq_len: int
    store: Any
    heldout: Callable[[], str]
    loader: Any
    n_s: Any
    n_t: int | None
    cache: Path | None
    t0: float = field(default_factory=time.perf_counter)

    def trainer(self, par: Parallel, progress: bool = True, own_rng: bool = False) -> Trainer:
        """The shared loop's :class:`Trainer` for this student, seeded by ``train.seed``."""
        n_t = self.n_t
        desc = f"distill {self.n_s.total / 1e6:.2f}M"
        desc += "" if n_t is None else f" <- {n_t / 1e6:.2f}M"
        torch.manual_seed(self.cfg.train.seed)
        return Trainer(self.student, self.loader, make_step(self.teacher, self.cfg.objective),
                       self.cfg.train, self.run,
                       eval_fn=_quick_eval(self.cfg, self.store, self.seq_len, par.device),
                       desc=desc, progress=progress, own_rng=own_rng)

    def finish(self, result: TrainResult, par: Parallel) -> DistillResult:
        """Rank 0 evaluates and saves; every rank gets the recorded result."""
        if par.is_main:
            _finish(self.cfg, self.run, result, self.tokenizer, self.heldout, self.seq_len,
                    self.n_s, self.n_t, self.cache, self.t0)
        par.barrier()
        return DistillResult(**self.run.summary()["result"])


DataFn = Callable[[DistillConfig, Any, Parallel], tuple[Any, Callable[[], str]]]


def open_session(cfg: DistillConfig, out: str | Path, par: Parallel, *, resume: bool = False,
                 overwrite: bool = False, force: bool = False,
                 teacher: tuple[nn.Module | None, Any] | None = None,
                 data: DataFn | None = None, shared_loader: Any = None,
                 relocatable: tuple[str, ...] = ()) -> Session:
    """Load, check and open everything one distillation needs; bad input fails before ``out``
    is touched. ``teacher`` (model, tokenizer), ``data`` and ``shared_loader`` let students
    trained together share one teacher, one token store and one teacher forward per batch;
    ``relocatable``: config keys a resume accepts changed (:meth:`RunDir.write_config`)."""
    student, tokenizer = load_student(cfg, par.device)
    model, t_tok = load_teacher(cfg, par.device) if teacher is None else teacher
    model = model if cfg.objective.alpha < 1 else None
    if model is not None:
        check_shared_vocab(student, model, tokenizer, t_tok)
    n_t = None if model is None else count_params(model).total
    seq_len = cfg.data.seq_len or model_context(student)
    total_steps_for(cfg.train, cfg.train.micro_batch_size * cfg.train.grad_accum * seq_len)
    run = _open_run(cfg, out, resume, overwrite, force, par, relocatable)
    _warn(run, par, size_warning(student, model))
    store, heldout = (data or _data)(cfg, tokenizer, par)
    loader = _train_loader(cfg, store, seq_len, model, par)
    cache = loader.cache.path if isinstance(loader, CachedTeacherLoader) else None
    if cache is not None:
        model = None  # its outputs are on disk: free the memory for the student
        if par.is_main:
            run.log({"event": "teacher_cache", "path": str(cache)})
    elif model is not None and shared_loader is not None:
        loader = shared_loader(loader)
    return Session(cfg, run, student, tokenizer, model, seq_len, store, heldout, loader,
                   count_params(student), n_t, cache)


def distill(cfg: DistillConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
            device: str | None = None, force: bool = False,
            relocatable: tuple[str, ...] = ()) -> DistillResult:
    """Run (or resume) one distillation into ``out``; a finished run is returned as is.

    ``force``: resume even though the config differs from the one the run started with
    (the differing keys are logged and the new config is stored); ``relocatable``: only
    these keys may differ (a sweep's cell, whose teacher and student its key fixes).
    """
    if resume and is_complete(out):
        return DistillResult(**RunDir(Path(out), True, True).summary()["result"])
    cfg = cfgmod.checked(cfg)
    par = setup(cfg.train.parallel, device)
    session = open_session(cfg, out, par, resume=resume, overwrite=overwrite, force=force,
                           relocatable=relocatable)
    result = session.finish(session.trainer(par).run(), par)
    par.close()
    return result


def _quick_eval(cfg: DistillConfig, store: Any, seq_len: int, dev: torch.device):  # noqa: ANN202
    """Periodic held-out loss on the first ``train.eval_tokens`` validation tokens."""
    def quick_eval(m: nn.Module) -> dict[str, float]:
        with autocast_for(cfg.train.precision, dev):
            return {"loss": mean_lm_loss(m, eval_batches(store.val, seq_len, cfg.eval.batch_size,
                                                         cfg.train.eval_tokens), dev)}

    return quick_eval


def _data(cfg: DistillConfig, tokenizer: Any, par: Any) -> tuple[Any, Callable[[], str]]:
    """The packed streams (tokenised once, by rank 0) and the held-out text's source: a
    corpus, or a ``tokens:PATH`` store streamed beforehand (:mod:`capgap.data.stream`)."""
    limit = cfg.eval.max_bytes or None
    if is_token_store_spec(cfg.data.corpus):
        path = store_path(cfg.data.corpus)
        store = TokenStore.load(path)
        if store.meta.get("tokenizer_hash") != tokenizer_hash(tokenizer):
            raise CapgapError(f"{cfg.data.corpus} was tokenised with another tokenizer than "
                              "the student's; stream it again with the student's tokenizer")
        return store, lambda: validation_text_of(path, limit)
    corpus = load_corpus(cfg.data.corpus)
    store = TokenStore.load(par.on_main(lambda: TokenStore.build_or_load(corpus, tokenizer).path))
    return store, lambda: validation_text(corpus, limit)


def _finish(cfg: DistillConfig, run: RunDir, result: Any, tokenizer: Any,
            heldout: Callable[[], str], seq_len: int, n_s: Any, n_t: int | None,
            cache: Path | None, t0: float) -> None:
    """Rank 0: final held-out scores, the model in the student's format, metrics, DONE."""
    student = result.model
    final = evaluate_text(student, tokenizer, heldout(), seq_len, cfg.eval.batch_size)
    model_dir = save_any_model(student, tokenizer, run.path / "model", overwrite=True)
    res = DistillResult(
        val_loss=final.loss, val_ppl=final.ppl, val_bpb=final.bpb, student_params=n_s.total,
        student_params_non_embedding=n_s.non_embedding,
        teacher_params=n_t,
        tokens=result.tokens, seconds=result.seconds, tokens_per_s=result.tokens_per_s,
        model_dir=str(model_dir), final_train_loss=result.final_train_loss)
    run.log({"event": "final_eval", "step": result.steps, **final.to_dict(),
             "wall_s": time.perf_counter() - t0})
    write_json(run.path / "metrics.json", {**res.metrics(), "heldout": final.to_dict(),
                                           "init": cfg.init,
                                           "teacher_cache": None if cache is None else str(cache)})
    run.finish({"result": res.to_dict(), "heldout": final.to_dict()})
