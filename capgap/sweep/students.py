"""The sweep's shared work, done once by the driver before any cell runs.

* teachers: pretrain a family into ``DIR/teachers`` (resumed) and/or size the given models,
  then score each on the held-out text its students are scored on (``DIR/teacher_losses.json``);
* scores: one calibration pass per teacher into ``DIR/scores/<teacher>`` (reused for every
  student size, as the paper's method allows);
* students: one pruned model per (teacher, size, allocation) in ``DIR/students/<teacher>/``,
  plus a re-initialised copy per seed for ``init: scratch``.

Each artefact is finished when its marker exists (``scores.json``, ``student.json``, both
written last), so an interrupted sweep redoes only what is missing.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from capgap import data
from capgap.data.corpus import load_corpus, validation_text
from capgap.data.stream import is_token_store_spec, store_path, validation_text_of
from capgap.evaluate.heldout import evaluate_text, model_context
from capgap.io import write_json
from capgap.models.anymodel import load_any_model, save_any_model
from capgap.models.init import reinitialise
from capgap.models.params import count_params
from capgap.prune import Scores, prune, score
from capgap.results.regime import TEACHER_LOSSES
from capgap.sweep.config import SweepConfig
from capgap.sweep.grid import CellSpec, Teacher, safe_name
from capgap.train.pretrain import pretrain

STUDENT_META = "student.json"


def resolve_teachers(cfg: SweepConfig, out: Path, workers: int = 1) -> list[Teacher]:
    """Pretrain the family (if any, ``workers`` sizes at once) and size every teacher;
    smallest first."""
    teachers: list[Teacher] = []
    if cfg.teachers.pretrain is not None:
        family = cfg.teachers.pretrain.family
        for r in pretrain(cfg.teachers.pretrain, out / "teachers", resume=True,
                          workers=workers):
            teachers.append(Teacher(r.name, r.model_dir, r.params, r.params_non_embedding,
                                    f"family:{family}/{r.name}"))
    for path in cfg.teachers.models:
        teachers.append(_sized_teacher(path))
    return sorted(teachers, key=lambda t: t.params)


def score_teachers(cfg: SweepConfig, out: Path, teachers: list[Teacher]) -> list[Teacher]:
    """Each teacher with its held-out loss on the cells' own eval text and settings (corpus,
    ``eval.max_bytes``, window, batch), in fp32 as the students are scored: the L_T a student's
    loss is read against. A teacher's pretraining figure is measured on other text (the whole
    validation split), which differs by a few hundredths of a nat. Cached in
    ``DIR/teacher_losses.json`` per setting, by what the teacher is (``Teacher.source``), so a
    moved family is not scored again; a cache that does not read is rebuilt."""
    settings = {"corpus": cfg.data.corpus, "max_bytes": cfg.eval.max_bytes,
                "seq_len": cfg.data.seq_len, "batch_size": cfg.eval.batch_size}
    path = out / TEACHER_LOSSES
    try:
        cache = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        if cache.get("settings") != settings or not isinstance(cache.get("losses"), dict):
            cache = {}
    except (ValueError, AttributeError):
        cache = {}
    cache = cache or {"settings": settings, "losses": {}}
    scored = []
    for t in teachers:
        if not isinstance(cache["losses"].get(t.source), (int, float)):
            cache["losses"][t.source] = round(_heldout_loss(t.path, settings), 6)
            write_json(path, cache)
        scored.append(replace(t, loss=float(cache["losses"][t.source])))
    names = {t.name: {"params": t.params, "loss": t.loss} for t in scored}
    if cache.get("teachers") != names:  # by name, for capgap law predict --teachers DIR
        write_json(path, cache | {"teachers": names})
    return scored


def _heldout_loss(model_path: str, settings: dict[str, Any]) -> float:
    """What :func:`capgap.distill.engine.distill` scores a student with, for a teacher."""
    model, tokenizer = load_any_model(model_path, dtype=torch.float32)
    limit = settings["max_bytes"] or None
    spec = settings["corpus"]
    text = (validation_text_of(store_path(spec), limit) if is_token_store_spec(spec)
            else validation_text(load_corpus(spec), limit))
    return evaluate_text(model, tokenizer, text, settings["seq_len"] or model_context(model),
                         settings["batch_size"]).loss


def _sized_teacher(path: str) -> Teacher:

    model, _ = load_any_model(path)
    n = count_params(model)
    return Teacher(safe_name(path), str(path), n.total, n.non_embedding, str(path))


def scores_dir(out: Path, teacher: Teacher) -> Path:
    return out / "scores" / teacher.name


def student_dir(out: Path, cell: CellSpec) -> Path:
    return out / "students" / cell.pruned_from.name / cell.student_name()


def prepare_students(cfg: SweepConfig, out: Path, cells: list[CellSpec]) -> None:
    """Make every student the cells need that is not already on disk."""
    by_teacher: dict[str, list[CellSpec]] = {}
    for cell in cells:
        if not (student_dir(out, cell) / STUDENT_META).is_file():
            by_teacher.setdefault(cell.pruned_from.name, []).append(cell)
    for group in by_teacher.values():
        _prepare_teacher(cfg, out, group)


def _prepare_teacher(cfg: SweepConfig, out: Path, cells: list[CellSpec]) -> None:
    """Load the teacher once, score it once, then cut every student it is asked for."""
    teacher = cells[0].pruned_from
    model, tokenizer = load_any_model(teacher.path)
    scores = teacher_scores(cfg, out, teacher, model, tokenizer)
    done: set[str] = set()
    for cell in cells:
        name = cell.student_name()
        if name in done:
            continue
        make_student(model, tokenizer, scores, cell, student_dir(out, cell))
        done.add(name)


def teacher_scores(cfg: SweepConfig, out: Path, teacher: Teacher, model: Any,
                   tokenizer: Any) -> Any:
    """The teacher's expressiveness scores, computed once and cached on disk."""
    folder = scores_dir(out, teacher)
    if (folder / "scores.json").is_file():
        return Scores.load(folder)
    scores = score(model, calibration_batches(cfg, model, tokenizer), tokens=cfg.scoring.tokens)
    scores.save(folder)
    return scores


def calibration_batches(cfg: SweepConfig, model: Any, tokenizer: Any) -> list[Any]:
    """Training-split batches for scoring (the validation split stays unseen)."""
    s = cfg.scoring
    return data.calibration_batches(cfg.data.corpus, tokenizer, s.tokens,
                                    scoring_seq_len(cfg, model_context(model)), s.batch_size,
                                    s.seed)


def scoring_seq_len(cfg: SweepConfig, context: int) -> int:
    """The calibration windows' length for a teacher whose context is ``context``."""
    return cfg.scoring.seq_len or cfg.data.seq_len or context


def make_student(teacher: Any, tokenizer: Any, scores: Any, cell: CellSpec, folder: Path) -> None:
    """Prune ``teacher`` to the cell's size (and re-initialise it for ``init: scratch``)."""
    start = time.perf_counter()
    result = prune(teacher, scores, target_params=cell.student_target,
                   allocation=cell.allocation)
    model = result.model
    if cell.init == "scratch":
        reinitialise(model, cell.seed)
    save_any_model(model, tokenizer, folder, overwrite=True)
    report = result.report
    write_json(folder / STUDENT_META, {
        "teacher": cell.pruned_from.name, "student_target": cell.student_target,
        "allocation": cell.allocation, "init": cell.init, "seed": cell.seed,
        "student_params": report["params_after_total"],
        "student_params_ne": report["params_after_non_embedding"],
        "sparsity": report["achieved_sparsity"],
        "prune_s": round(time.perf_counter() - start, 3),
    })


def student_meta(out: Path, cell: CellSpec) -> dict[str, Any]:
    """What ``make_student`` recorded about the cell's student."""
    return json.loads((student_dir(out, cell) / STUDENT_META).read_text(encoding="utf-8"))
