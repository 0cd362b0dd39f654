"""Several students distilled from one teacher together: one teacher forward per batch.

In a sweep every student of a teacher (each size, objective and its no-teacher baseline)
reads the same batches in the same order when they share the seed and token budget, so
running the frozen teacher once per student repeats identical work; at teacher/student
ratios of 3x and more that forward is most of a distilled cell's cost.
:func:`distill_lockstep` opens one :class:`~capgap.distill.engine.Session` per student,
loads the teacher and the token store once, and advances the students' trainers in turn, step
by step; the teacher body runs once per micro-batch (:class:`SharedTeacherLoader`) and each
student applies the teacher's head inside its own chunked loss.

Each student keeps everything of its own: run folder, optimizer, RNG state, checkpoints,
``DONE.json``. So one killed group resumes exactly as its students would one by one, and in
fp32 on CPU a student trained in lockstep ends ``torch.equal`` to the same run made alone
(tested). Students at different steps (one resumed from a later checkpoint) wait: the group
always advances the students furthest behind, so they share batches again once caught up.
"""

from __future__ import annotations

import sys
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import nn
from tqdm.auto import tqdm

from capgap import config as cfgmod
from capgap.data.tokenizer import tokenizer_hash
from capgap.distill.chunked import teacher_rows_of
from capgap.distill.engine import (
    DistillConfig,
    DistillResult,
    Session,
    _data,
    load_teacher,
    open_session,
)
from capgap.errors import CapgapError
from capgap.runs import RunDir, is_complete
from capgap.train.distributed import Parallel, setup
from capgap.train.loop import autocast_for
from capgap.train.loss import lm_head

SHARE_BYTES = 1 << 30  # a batch's teacher logits up to this size (fp32) are computed once

# Settings every member must share for the batches (and the teacher's outputs) to be one.
_SHARED = ("teacher", "teacher_dtype", "data", "teacher_cache", "train.micro_batch_size",
           "train.grad_accum", "train.seed", "train.precision", "train.threads",
           "objective.chunk_size")


class SharedTeacherLoader:
    """A loader whose batches also carry the teacher's side of the loss
    (:class:`~capgap.distill.chunked.TeacherRows`), computed once per micro-step for every
    student that reads it: the teacher body runs once, and each chunk of its head's logits
    once when the batch's logits fit in ``share_bytes`` (the last ``keep`` micro-steps are
    kept)."""

    def __init__(self, loader: Any, teacher: nn.Module, precision: str, keep: int = 1,
                 share_bytes: int = SHARE_BYTES) -> None:
        self.loader, self.teacher, self.precision = loader, teacher, precision
        self.seq_len, self.batch_size = loader.seq_len, loader.batch_size
        self.keep = max(1, keep)
        vocab = lm_head(teacher).out_features
        self.share = self.batch_size * self.seq_len * vocab * 4 <= share_bytes
        self.device = next(teacher.parameters()).device
        self._memo: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.forwards = 0

    def batch(self, step: int) -> dict[str, Any]:
        """{"input_ids": (B, T), "t_rows": TeacherRows}; the teacher under the students'
        autocast and no_grad, exactly as each student's own loss would run it."""
        if step not in self._memo:
            ids = self.loader.batch(step)
            with autocast_for(self.precision, self.device):
                rows = teacher_rows_of(self.teacher, ids.to(self.device), share=self.share)
            self._memo[step] = {"input_ids": ids, "t_rows": rows}
            self.forwards += 1
            while len(self._memo) > self.keep:
                self._memo.popitem(last=False)
        return self._memo[step]


def shared_settings(cfg: DistillConfig) -> dict[str, Any]:
    """What the members of one group must have in common (a baseline has no teacher, so it
    may join any group reading its data)."""
    d = cfgmod.to_dict(cfg)
    out = {}
    for name in _SHARED:
        value: Any = d
        for part in name.split("."):
            value = value[part]
        out[name] = value
    if cfg.objective.alpha >= 1:
        out.pop("teacher")
    return out


def _check_group(cfgs: list[DistillConfig]) -> None:
    settings = [shared_settings(c) for c in cfgs]
    teachers = {s.pop("teacher") for s in settings if "teacher" in s}
    differ = sorted({k for s in settings for k, v in s.items() if v != settings[0][k]})
    if len(teachers) > 1:
        differ.insert(0, "teacher")
    if differ:
        raise CapgapError("distill_lockstep: the students of one group must share "
                          f"{', '.join(differ)}; run the others in another group")


def distill_lockstep(
    jobs: list[tuple[DistillConfig, str | Path]],
    *,
    resume: bool = True,
    restart_unusable: bool = False,
    device: str | None = None,
    progress: bool = True,
    relocatable: tuple[str, ...] = (),
) -> list[DistillResult | CapgapError]:
    """Distil every ``(config, out)`` of ``jobs`` together; see the module docstring.

    Returns one entry per job, in order: its result, or the error that stopped that student
    alone (the others go on). ``restart_unusable``: a folder that cannot be resumed (half
    written, another config) is started afresh instead of failing; ``relocatable``: config
    keys a resume accepts changed (a sweep cell's teacher and student paths). One process only.
    """
    cfgs = [cfgmod.checked(c) for c, _ in jobs]
    _check_group(cfgs)
    par = setup("ddp", device)
    if par.world > 1:
        raise CapgapError("distill_lockstep runs in one process; use distill under torchrun")
    out: list[Any] = [None] * len(jobs)
    todo = []
    for i, (cfg, path) in enumerate(zip(cfgs, (p for _, p in jobs), strict=True)):
        if resume and is_complete(path):
            out[i] = DistillResult(**RunDir(Path(path), True, True).summary()["result"])
        else:
            todo.append((i, cfg, Path(path)))
    if todo:
        _run(todo, out, par, resume, restart_unusable, progress, relocatable)
    return out


def _run(todo: list[tuple[int, DistillConfig, Path]], out: list, par: Parallel, resume: bool,
         restart_unusable: bool, progress: bool, relocatable: tuple[str, ...] = ()) -> None:
    """Open every student's session, train them in step, finish each as soon as it is done."""
    first = next((c for _, c, _ in todo if c.objective.alpha < 1), todo[0][1])
    teacher = load_teacher(first, par.device)
    shared: dict[str, SharedTeacherLoader] = {}

    def share(loader: Any) -> SharedTeacherLoader:
        if "loader" not in shared:
            shared["loader"] = SharedTeacherLoader(loader, teacher[0], first.train.precision,
                                                   keep=first.train.grad_accum)
        return shared["loader"]

    data = _memo_data()
    live: list[tuple[int, Session, Any]] = []
    for i, cfg, path in todo:
        try:
            session = _open(cfg, path, par, resume, restart_unusable, teacher, data, share,
                            relocatable)
            live.append((i, session, session.trainer(par, progress=False, own_rng=True)))
        except CapgapError as e:
            out[i] = e
    _advance_all(live, out, par, progress)


def _open(cfg: DistillConfig, path: Path, par: Parallel, resume: bool, restart_unusable: bool,
          teacher: tuple, data: Callable, share: Callable,
          relocatable: tuple[str, ...] = ()) -> Session:
    kwargs = {"teacher": teacher, "data": data, "shared_loader": share,
              "relocatable": relocatable}
    try:
        return open_session(cfg, path, par, resume=resume, **kwargs)
    except CapgapError:
        if not restart_unusable or not path.exists():
            raise
        return open_session(cfg, path, par, overwrite=True, **kwargs)


def _memo_data() -> Callable:
    """The engine's token-store loader, called once per (corpus, tokenizer) for the group."""
    memo: dict[tuple[str, str], Any] = {}

    def data(cfg: DistillConfig, tokenizer: Any, par: Parallel) -> Any:
        key = (cfg.data.corpus, tokenizer_hash(tokenizer))
        if key not in memo:
            memo[key] = _data(cfg, tokenizer, par)
        return memo[key]

    return data


def _advance_all(live: list[tuple[int, Session, Any]], out: list, par: Parallel,
                 progress: bool) -> None:
    """Step the students furthest behind until all are done; a failing student is dropped."""
    total = max((t.total_steps for _, _, t in live), default=0)
    bar = tqdm(total=total, initial=min((t.step for _, _, t in live), default=0), unit="step",
               desc=f"lockstep x{len(live)}", dynamic_ncols=True, mininterval=1.0, leave=False,
               disable=not progress)
    start, tokens = time.perf_counter(), 0
    while live:
        now = min(t.step for _, _, t in live)
        for i, session, trainer in list(live):
            if trainer.step != now:
                continue
            try:
                trainer.advance()
                tokens += trainer.tokens_per_step
                if trainer.done:
                    live.remove((i, session, trainer))
                    out[i] = session.finish(trainer.finish(), par)
            except CapgapError as e:
                live.remove((i, session, trainer))
                out[i] = e
                print(f"capgap distill: {session.run.path}: {e}", file=sys.stderr)
        if live and min(t.step for _, _, t in live) > now:
            bar.update(min(t.step for _, _, t in live) - now)
            bar.set_postfix(students=len(live),
                            tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):,.0f}")
    bar.close()
