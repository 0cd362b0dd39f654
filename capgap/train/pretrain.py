"""Pretrain a family of teachers from scratch on a corpus.

``pretrain(cfg, out)`` trains every size of a family (a YAML ladder) with the shared loop and
writes, per size, a run folder whose ``model/`` is a standard Hugging Face checkpoint
(safetensors, config, tokenizer). The family folder holds the tokenizer, the resolved config
and ``summary.json`` with one row per size; it is resumable size by size and step by step.
"""

from __future__ import annotations

import dataclasses
import math
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from capgap import config as cfgmod
from capgap.data import TokenStore, get_tokenizer, load_corpus, load_tokenizer, validation_text
from capgap.data.loader import PackedLoader, eval_batches
from capgap.errors import CapgapError
from capgap.evaluate.heldout import EvalConfig, evaluate_text
from capgap.io import write_json
from capgap.models import build_model, load_family, save_model
from capgap.models.params import count_params, count_params_from_config
from capgap.results.regime import REGIME
from capgap.runs import RunDir, env_threads, is_complete, use_threads
from capgap.train.loop import OptimConfig, TrainConfig, train
from capgap.train.loss import lm_loss, mean_lm_loss


@dataclass
class DataConfig:
    """Where text comes from and how it becomes tokens."""

    corpus: str = "default"
    """'default' (embedded English corpus), a .txt/.jsonl file or folder, or hf:NAME."""
    vocab_size: int = 4096
    """Size of the byte-level BPE trained on the corpus (ignored with ``tokenizer``)."""
    tokenizer: str | None = None
    """An existing tokenizer folder to use instead of training one."""
    seq_len: int = 0
    """Training sequence length (0: the family's)."""


def _default_train() -> TrainConfig:
    return TrainConfig(tokens=1_000_000, micro_batch_size=32,
                       optim=OptimConfig(lr=1e-3, warmup_frac=0.02, min_lr_ratio=0.1))


@dataclass
class PretrainConfig:
    """``capgap pretrain``: which family, on what data, for how long."""

    family: str = "pythia-micro"
    """A shipped family name (see ``capgap pretrain --list``) or a family YAML path."""
    sizes: list[str] | None = None
    """Train only these sizes of the family (default: all)."""
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=_default_train)
    eval: EvalConfig = field(default_factory=EvalConfig)
    tokens_per_param: float = 0.0
    """When > 0, each size trains on this many tokens per total parameter (rounded up to
    whole steps) instead of ``train.tokens``: every teacher equally trained, whatever its size."""

    def validate(self) -> None:
        if self.tokens_per_param < 0:
            raise CapgapError(f"tokens_per_param must be >= 0, got {self.tokens_per_param}")

    def train_for(self, params: int) -> TrainConfig:
        """The training settings of a size with ``params`` total parameters."""
        if self.tokens_per_param <= 0:
            return self.train
        return dataclasses.replace(self.train, tokens=math.ceil(self.tokens_per_param * params))


@dataclass
class SizeResult:
    name: str
    params: int
    params_non_embedding: int
    val_loss: float
    val_ppl: float
    val_bpb: float
    train_tokens: int
    seconds: float
    tokens_per_s: float
    model_dir: str
    epochs: float | None = None
    """Passes over the training split (more than one when the budget exceeds the corpus)."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def lm_step(model: torch.nn.Module, input_ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
    """Plain next-token cross-entropy through the chunked head loss: no full-vocabulary
    logits, which made the step 1.2-1.3x faster than HF's ``labels=`` path on the micro
    family (the log-softmax over [B*T, V] is cache-bound on a CPU)."""
    return lm_loss(model, input_ids).loss, {}


@dataclass
class PretrainData:
    """The corpus, its tokenizer and packed token streams, shared by every size."""

    corpus: Any
    tokenizer: Any
    store: Any

    @property
    def train(self) -> Any:
        return self.store.train

    @property
    def val(self) -> Any:
        return self.store.val

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    def val_text(self, max_bytes: int) -> str:
        return validation_text(self.corpus, max_bytes or None)


def prepare_data(cfg: DataConfig) -> PretrainData:
    """Load the corpus, train (or load) the tokenizer and tokenise once (all cached)."""
    corpus = load_corpus(cfg.corpus)
    tokenizer = (load_tokenizer(cfg.tokenizer) if cfg.tokenizer
                 else get_tokenizer(corpus, cfg.vocab_size))
    return PretrainData(corpus, tokenizer, TokenStore.build_or_load(corpus, tokenizer))


def pretrain_size(
    cfg: PretrainConfig, family, size: str, data, out: Path,  # noqa: ANN001
    resume: bool, overwrite: bool,
) -> SizeResult:
    """Train one size of the family into ``out/<size>``; skip it if already finished."""
    run = RunDir.open(out / size, resume=resume, overwrite=overwrite)
    if run.complete:
        return _here(SizeResult(**run.summary()["result"]), out)
    seq_len = cfg.data.seq_len or family.seq_len
    tok = data.tokenizer
    config = family.build_config(size, vocab_size=data.vocab_size, bos_token_id=tok.bos_token_id,
                                 eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    train_cfg = cfg.train_for(count_params_from_config(config).total)
    run.write_config({"family": family.name, "size": size, "seq_len": seq_len,
                      "vocab_size": data.vocab_size, "train": train_cfg})
    torch.manual_seed(train_cfg.seed)
    model = build_model(config)
    loader = PackedLoader(data.train, seq_len=seq_len, batch_size=train_cfg.micro_batch_size,
                          seed=train_cfg.seed)

    def quick_eval(m: torch.nn.Module) -> dict[str, float]:
        return {"loss": mean_lm_loss(m, eval_batches(data.val, seq_len, cfg.eval.batch_size,
                                                     train_cfg.eval_tokens))}

    n = count_params(model)
    result = train(model, loader, lm_step, train_cfg, run, eval_fn=quick_eval,
                   desc=f"pretrain {size} ({n.total / 1e6:.2f}M)")
    final = evaluate_text(model, data.tokenizer, data.val_text(cfg.eval.max_bytes), seq_len,
                          cfg.eval.batch_size)
    model_dir = run.path / "model"
    save_model(model, data.tokenizer, model_dir, overwrite=True)
    res = SizeResult(name=size, params=n.total, params_non_embedding=n.non_embedding,
                     val_loss=final.loss, val_ppl=final.ppl, val_bpb=final.bpb,
                     train_tokens=result.tokens, seconds=result.seconds,
                     tokens_per_s=result.tokens_per_s, model_dir=str(model_dir),
                     epochs=round(result.tokens / max(len(data.train), 1), 3))
    run.log({"event": "final_eval", "step": result.steps, **final.to_dict()})
    run.finish({"result": res.to_dict(), "heldout": final.to_dict()})
    return res


def pretrain(
    cfg: PretrainConfig, out: str | Path, resume: bool = False, overwrite: bool = False,
    workers: int = 1,
) -> list[SizeResult]:
    """Pretrain every requested size of ``cfg.family`` under ``out``; return their results.

    ``workers > 1`` trains sizes at once in spawned processes, each with cores / workers
    torch threads, largest first: small models use threads poorly, so two 1-thread
    processes on 2 cores train the micro family ~1.2x faster than one 2-thread process.
    """
    if workers < 1:
        raise CapgapError(f"workers must be at least 1, got {workers}")
    cfg = cfgmod.checked(cfg)
    out = Path(out)
    family = load_family(cfg.family)
    sizes = cfg.sizes or [s.name for s in family.sizes]
    unknown = [s for s in sizes if s not in {x.name for x in family.sizes}]
    if unknown:
        raise CapgapError(f"family {family.name} has no size {unknown[0]!r}; "
                          f"sizes: {', '.join(s.name for s in family.sizes)}")
    run = RunDir.open(out, resume=resume, overwrite=overwrite)
    if run.complete:  # each model where it lies now (a family folder may have been moved)
        return [_here(SizeResult(**r), out) for r in run.summary()["results"]]
    run.write_config(cfg)
    t0 = time.perf_counter()
    data = prepare_data(cfg.data)  # tokenizer + token streams cached before any worker starts
    todo = [s for s in sizes if not is_complete(out / s)]
    parallel = workers > 1 and len(todo) > 1
    if parallel:
        _pretrain_parallel(cfg, sizes, todo, out, workers, run.resumed)
    results = []
    for size in sizes:  # collects what the pool trained (sizes finished in this very run)
        res = pretrain_size(cfg, family, size, data, out, resume=run.resumed or parallel,
                            overwrite=False)
        results.append(res)
        run.log({"event": "size_done", "step": len(results), **res.to_dict()})
    write_json(out / REGIME, regime(results))
    run.finish({"results": [r.to_dict() for r in results],
                "seconds": time.perf_counter() - t0})
    return results




def _here(result: SizeResult, out: Path) -> SizeResult:
    """``result`` with its model folder inside ``out``, where this family now lies."""
    model = out / result.name / "model"
    return replace(result, model_dir=str(model)) if model.is_dir() else result


def regime(results: list[SizeResult]) -> dict[str, Any]:
    """How trained and how embedding-heavy each teacher is (the regime a capacity-gap sweep
    measures in): ``{"teachers": [{name, params, non_embedding_params, tokens,
    tokens_per_param, embedding_fraction, epochs, val_loss}]}``."""
    return {"teachers": [{
        "name": r.name, "params": r.params, "non_embedding_params": r.params_non_embedding,
        "tokens": r.train_tokens, "tokens_per_param": round(r.train_tokens / r.params, 3),
        "embedding_fraction": round(1 - r.params_non_embedding / r.params, 4),
        "epochs": r.epochs, "val_loss": r.val_loss} for r in results]}


def _pretrain_parallel(cfg: PretrainConfig, sizes: list[str], todo: list[str], out: Path,
                       workers: int, resume: bool) -> None:
    """Train ``todo`` in a process pool, the family's largest sizes first (they dominate)."""
    threads = max(1, env_threads() // workers)
    order = sorted(todo, key=sizes.index, reverse=True)
    with ProcessPoolExecutor(max_workers=min(workers, len(order)), mp_context=get_context("spawn"),
                             initializer=use_threads, initargs=(threads,)) as pool:
        for f in [pool.submit(_pretrain_one, cfg, size, str(out), resume) for size in order]:
            f.result()


def _pretrain_one(cfg: PretrainConfig, size: str, out: str, resume: bool) -> None:
    """One size in a worker process (data and tokenizer come from the on-disk cache)."""
    pretrain_size(cfg, load_family(cfg.family), size, prepare_data(cfg.data), Path(out),
                  resume=resume, overwrite=False)
