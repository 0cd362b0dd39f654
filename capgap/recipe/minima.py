"""The MiniMA recipe (arXiv 2311.07052, section 5) for any supported teacher and size.

LLaMA2-7B became MiniMA-3B in three stages; ``run_minima(cfg, out)`` runs them in order,
each in its own run folder, and skips the ones already finished::

    out/1-prune/    model/ (vanilla HF checkpoint + prune_report.json + scores/), metrics.json
    out/2-distill/  the distillation engine's run folder: checkpoints/, model/, metrics.json
    out/3-sft/      optional instruction tuning (MiniChat): model/, metrics.json
    out/recipe.json teacher, shape, law check, each stage's summary, the final model

1. **Prune.** :func:`~capgap.recipe.shapes.minima_shape` picks the shape (drop k bottom and k
   top layers, cut hidden / heads / KV groups / FFN by the same fraction, GPU-friendly
   multiples, within 1 % of the target). Expressiveness scores on calibration text then pick
   *which* layers' heads, neurons and hidden dims fill exactly those counts, and the weights
   are sliced (:func:`capgap.models.pruned.materialize`). ``capgap.prune.prune`` solves its own shape
   from a size target, so the plan is built here from the scores and handed to the same
   public materialiser: the shape rule stays in one place and pruning code is untouched.
2. **Distill.** ``capgap.distill`` with the paper's 0.5 CE + 0.5 soft CE on a weighted data
   mixture (:mod:`capgap.recipe.mixture`).
3. **Instruction-tune** (optional, :mod:`capgap.recipe.sft`).

With a fitted law (``capgap law fit``) and the available teachers, the recipe first reports
whether its teacher is the one the law recommends for the student's size.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from capgap import config as cfgmod
from capgap.data import calibration_batches
from capgap.data.stream import (
    TOKENS_PREFIX,
    StreamSource,
    is_token_store_spec,
    store_path,
    stream_store,
)
from capgap.distill.engine import DistillConfig, DistillDataConfig, ObjectiveConfig, distill
from capgap.errors import CapgapError
from capgap.evaluate.heldout import EvalConfig, model_context
from capgap.io import write_json
from capgap.law import load_law, predict
from capgap.law.cells import AS_GIVEN, SIZE_UNITS
from capgap.models.anymodel import load_any_model, resolve_model_path
from capgap.models.io import load_config, load_tokenizer
from capgap.models.params import count_params, count_params_from_config
from capgap.models.pruned import KeepPlan
from capgap.prune import PruneResult, Scores, materialize, save_pruned, score
from capgap.recipe.mixture import MixtureSource, mixture_corpus, normalised_weights, read_meta
from capgap.recipe.sft import SFTConfig, instruction_tune, load_conversations, use_chat_template
from capgap.recipe.shapes import Shape, minima_shape, reshape_config
from capgap.runs import RunDir, is_complete
from capgap.train.loop import TrainConfig
from capgap.units import format_size, parse_size

FOLDERS = {"prune": "1-prune", "distill": "2-distill", "sft": "3-sft"}
RECORD = "recipe.json"


@dataclass
class PruneStage:
    """Stage 1: the student's size and the calibration text that scores the teacher."""

    target_params: int | str = 0
    """Student size in total parameters: 2915000000 or '2.9B'."""
    drop_layers: int | None = None
    """Layers dropped at *each* end (MiniMA: 4 of 32); null: chosen with the width."""
    multiple: int | None = None
    """Hidden and FFN sizes round to this (null: 128/256 for large models, less for small)."""
    corpus: str = "default"
    calib_tokens: int = 65_536
    batch_size: int = 8
    seq_len: int = 0
    """Calibration window (0: the teacher's context, at most 512)."""
    seed: int = 0
    device: str = "auto"
    """Where scores are computed: auto (CUDA if present), cpu, cuda."""


@dataclass
class DistillTrain(TrainConfig):
    """The distillation engine's budget; the optimizer defaults are already the paper's.
    (A subclass, not a default_factory: see :class:`capgap.recipe.sft.SFTOptim`.)"""

    tokens: int = 400_000


@dataclass
class DistillStage:
    """Stage 2: the paper's objective on a weighted mixture of corpora."""

    mixture: list[MixtureSource] = field(default_factory=lambda: [MixtureSource()])
    mixture_tokens: int = 0
    """Tokens drawn into the mixture (0: train.tokens); unused with a single source."""
    stream: bool = False
    """Stream the mixture into a token store (:mod:`capgap.data.stream`): sources are read
    lazily (hf: datasets with streaming=True) and never held in memory — for LLM-scale
    mixtures. Off: the in-memory mixture (:mod:`capgap.recipe.mixture`)."""
    shuffle_buffer: int = 10_000
    """Documents per source in the streaming shuffle buffer (with ``stream``)."""
    seq_len: int = 0
    """0: the student's context, at most 1024."""
    teacher_dtype: str = "auto"
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    train: DistillTrain = field(default_factory=DistillTrain)
    eval: EvalConfig = field(default_factory=EvalConfig)


@dataclass
class LawCheck:
    """Ask a fitted law whether the recipe's teacher is the best of the available ones."""

    law: str | None = None
    """A law.json from ``capgap law fit``."""
    teachers: list[str] = field(default_factory=list)
    """Available teachers: sizes ('1.3B') or model folders; the recipe's teacher is added."""
    unit: float = 1.0
    """Parameters per size unit of a law fitted from a points file in other units (1e6 for
    millions); laws fitted from sweeps carry their unit and ignore this."""


@dataclass
class MinimaConfig:
    """``capgap recipe minima``: teacher -> pruned -> distilled -> (instruction-tuned) student."""

    teacher: str = ""
    """A model folder, run folder or hub name (GPT-2, GPT-NeoX, LLaMA-like)."""
    prune: PruneStage = field(default_factory=PruneStage)
    distill: DistillStage = field(default_factory=DistillStage)
    sft: SFTConfig = field(default_factory=SFTConfig)
    law: LawCheck = field(default_factory=LawCheck)

    def validate(self) -> None:
        if not self.teacher:
            raise CapgapError("recipe: a teacher is required (--teacher MODEL)")
        if not self.prune.target_params:
            raise CapgapError("recipe: a student size is required (--target-params N, e.g. 3B)")
        normalised_weights(self.distill.mixture)


def target_params(cfg: MinimaConfig) -> int:
    """The student size in parameters (the config may say '2.9B')."""
    return int(round(parse_size(cfg.prune.target_params)))


def run_minima(cfg: MinimaConfig, out: str | Path, resume: bool = False,
               overwrite: bool = False, force: bool = False) -> dict[str, Any]:
    """Run (or resume) the recipe into ``out``; returns what ``recipe.json`` holds.

    Every check that needs no weights (shape, mixture weights, chat template, chat data, law)
    runs before ``out`` is touched. A finished stage (its ``DONE.json``) is never redone.
    ``force`` resumes with a changed config (the differing keys are logged), e.g. to add
    instruction tuning to a finished prune + distill.
    """
    out = Path(out)
    if resume and is_complete(out) and not force:
        return json.loads((out / RECORD).read_text(encoding="utf-8"))
    cfg = cfgmod.checked(cfg)
    teacher_config, shape = _plan(cfg)
    law = law_check(cfg, teacher_config, shape)
    run = RunDir.open(out, resume=resume, overwrite=overwrite)
    run.write_config(cfg, force=force)
    record: dict[str, Any] = {"teacher": cfg.teacher, "teacher_params": _size(teacher_config),
                              "target_params": shape.target, "shape": shape.to_dict(),
                              "law": law, "stages": {}}
    if law is not None:
        _say(run, law["message"])
    stages = {"prune": lambda path: prune_stage(cfg, shape, path, force),
              "distill": lambda path: distill_stage(cfg, out / FOLDERS["prune"] / "model", path,
                                                    force),
              "sft": lambda path: _sft(cfg, out / FOLDERS["distill"] / "model", path, force)}
    for name in [*stages][: 3 if cfg.sft.enabled else 2]:
        path = out / FOLDERS[name]
        skipped, t0 = is_complete(path), time.perf_counter()
        record["stages"][name] = stages[name](path)
        record["model"] = str(path / "model")
        run.log({"event": "stage", "stage": name, "skipped": skipped,
                 "seconds": round(time.perf_counter() - t0, 2)})
        write_json(out / RECORD, record)  # after every stage: the record of a killed run
    run.finish({"model": record["model"]})
    return record


def _plan(cfg: MinimaConfig) -> tuple[Any, Shape]:
    """The teacher's config and the student shape, plus the cheap checks of later stages."""
    teacher = resolve_model_path(cfg.teacher)
    config = load_config(teacher)
    p = cfg.prune
    shape = minima_shape(config, target_params(cfg), multiple=p.multiple, drop_layers=p.drop_layers)
    if cfg.sft.enabled:
        use_chat_template(load_tokenizer(teacher), cfg.sft.chat_template)
        load_conversations(cfg.sft.data)
    return config, shape


def _size(config: Any, non_embedding: bool = False) -> int:
    n = count_params_from_config(config)
    return n.non_embedding if non_embedding else n.total


def _say(run: RunDir, message: str) -> None:
    print(f"capgap recipe: {message}", file=sys.stderr)
    run.log({"event": "message", "message": message})


# -- the law --------------------------------------------------------------------------------


def law_check(cfg: MinimaConfig, teacher_config: Any, shape: Shape) -> dict[str, Any] | None:
    """Whether the recipe's teacher is the candidate the law ranks first for this student."""
    if not cfg.law.law:
        return None

    law = load_law(cfg.law.law)
    ne = law["size_unit"] == SIZE_UNITS["non_embedding"]
    unit = cfg.law.unit if law["size_unit"] == AS_GIVEN else 1.0
    ours = _size(teacher_config, ne)
    candidates = sorted({*(_teacher_size(t, ne) for t in cfg.law.teachers), ours})
    student = _size(reshape_config(teacher_config, shape), ne)
    rec = predict(law, student / unit, [c / unit for c in candidates])
    best = rec.closest_teacher * unit
    is_best = math.isclose(best, ours, rel_tol=1e-9)
    kind = "non-embedding " if ne else ""
    message = (f"law: T* = {format_size(rec.target * unit)} for a {format_size(student)} "
               f"{kind}student; of the available teachers it recommends {format_size(best)}; "
               f"the recipe's teacher ({format_size(ours)}) "
               + ("is that one" if is_best else "is NOT that one"))
    if rec.warnings:
        message += f" ({'; '.join(rec.warnings)})"
    return {"law": str(cfg.law.law), "size_unit": law["size_unit"], "student_params": student,
            "teacher_params": ours, "recommended_target": rec.target * unit,
            "recommended_teacher": best, "teacher_is_recommended": is_best,
            "candidates": candidates, "warnings": rec.warnings, "message": message}


def _teacher_size(spec: str, non_embedding: bool) -> float:
    """A size ('1.3B', 3e9) as given, or the size of the model folder ``spec`` names."""
    try:
        return parse_size(spec)
    except CapgapError:
        return _size(load_config(resolve_model_path(spec)), non_embedding)


# -- stage 1: prune -------------------------------------------------------------------------


def shape_plan(scores: Scores, shape: Shape) -> KeepPlan:
    """The kept units for ``shape``: its layers, and in each kept layer the highest-scoring
    KV groups (a KV head with its query heads) and FFN neurons; hidden dims top-k overall.
    (Per-layer normalisation of the scores does not change a ranking inside one layer.)"""

    def top(s: torch.Tensor, k: int) -> torch.Tensor:
        return torch.argsort(s, descending=True, stable=True)[:k].sort().values

    return KeepPlan(layers=list(shape.layers_kept), hidden=top(scores.hidden, shape.hidden),
                heads=[top(scores.heads[i], shape.kv_heads) for i in shape.layers_kept],
                neurons=[top(scores.neurons[i], shape.ffn) for i in shape.layers_kept])


def prune_stage(cfg: MinimaConfig, shape: Shape, out: Path, force: bool = False) -> dict[str, Any]:
    """Score the teacher, slice it to ``shape``, save a vanilla checkpoint in ``out/model``."""
    run = RunDir.open(out, resume=True)
    if run.complete:
        return run.summary()["result"]
    run.write_config({"teacher": cfg.teacher, "prune": cfg.prune}, force=force)
    t0 = time.perf_counter()
    model, tokenizer = load_any_model(cfg.teacher)
    if tokenizer is None:
        raise CapgapError(f"{cfg.teacher} has no tokenizer; it is needed for calibration text")
    p = cfg.prune
    model.to(p.device if p.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu")
    before = count_params(model)
    scores = score(model, _calibration(model, tokenizer, p), tokens=p.calib_tokens, progress=True)
    plan = shape_plan(scores, shape)
    small = materialize(model, plan, "uniform", inplace=True).to("cpu")  # teacher not needed now
    after = count_params(small)
    if after.total != shape.params:  # the shape rule and the pruned model must agree exactly
        raise AssertionError(f"pruned model has {after.total} params, shape rule said {shape.params}")
    report = {"source_model": cfg.teacher, "params_before": before.total,
              "params_after": after.total, "params_after_non_embedding": after.non_embedding,
              "target_params": shape.target, "error": shape.error, "binding": shape.binding,
              "layers_kept": plan.layers, "hidden_kept": plan.d, "heads_kept": shape.heads,
              "kv_heads_kept": shape.kv_heads, "ffn_kept": shape.ffn, "allocation": "uniform",
              "calibration_tokens": scores.meta.get("calibration_tokens"),
              "seconds": round(time.perf_counter() - t0, 2)}
    save_pruned(PruneResult(small, plan, report), tokenizer, out / "model", export="vanilla",
                overwrite=True, scores=scores)
    write_json(out / "metrics.json", report)
    run.finish({"result": report})
    return report


def _calibration(model: nn.Module, tokenizer: Any, p: PruneStage) -> list[torch.Tensor]:
    """Training-split windows of the calibration corpus in the teacher's tokenizer."""
    seq_len = p.seq_len or model_context(model, default=512)
    return calibration_batches(p.corpus, tokenizer, p.calib_tokens, seq_len, p.batch_size, p.seed)


# -- stages 2 and 3 -------------------------------------------------------------------------


def distill_stage(cfg: MinimaConfig, student: Path, out: Path,
                  force: bool = False) -> dict[str, Any]:
    """Distil the pruned student from the teacher on the mixture (engine's run folder)."""
    d = cfg.distill
    if not is_complete(out):
        tokenizer = load_tokenizer(student)
        tokens = d.mixture_tokens or d.train.tokens
        if d.stream:
            path = stream_store([StreamSource(m.corpus, m.weight, m.text_field)
                                 for m in d.mixture], tokenizer, tokens, seed=d.train.seed,
                                shuffle_buffer=d.shuffle_buffer)
            corpus = TOKENS_PREFIX + str(path)
        else:
            corpus = mixture_corpus(d.mixture, tokenizer, tokens, seed=d.train.seed)
        dcfg = DistillConfig(student=str(student), teacher=cfg.teacher,
                             teacher_dtype=d.teacher_dtype,
                             data=DistillDataConfig(corpus=corpus, seq_len=d.seq_len),
                             objective=d.objective, train=d.train, eval=d.eval)
        distill(dcfg, out, resume=True, force=force)
    corpus = yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8"))["data"]["corpus"]
    return RunDir(out, True, True).summary()["result"] | {"corpus": corpus,
                                                          "mixture": _mixture_meta(corpus)}


def _mixture_meta(corpus: str) -> dict[str, Any] | None:
    """The realised mixture: the streamed store's sources, or the in-memory mixture's."""
    if is_token_store_spec(corpus):
        meta = json.loads((store_path(corpus) / "meta.json").read_text(encoding="utf-8"))
        keys = ("requested_tokens", "limited_by_source", "sources")
        return {k: meta[k] for k in keys} | {"tokens": meta["train_tokens"], "streamed": True}
    return read_meta(corpus)


def _sft(cfg: MinimaConfig, model: Path, out: Path, force: bool) -> dict[str, Any]:
    return instruction_tune(cfg.sft, model, out, resume=True, force=force)["result"]
