"""Benchmarks through lm-evaluation-harness, used as a library.

Why a wrapper at all: capgap's models are not always loadable by name (a global-allocation
pruned model has per-layer shapes no vanilla config expresses), so the model is loaded by
capgap and handed to lm-eval in memory (``HFLM(pretrained=model, tokenizer=tok)``). The
wrapper also

* resolves *suites* — string-named YAML files under ``capgap/evaluate/suites`` (lm-eval's
  own registry style) pairing each benchmark with its shot count, headline metric and the
  numbers a paper published, so one suite runs each task at its own shot count;
* always adds the bundled offline tasks (``capgap/evaluate/tasks``) to lm-eval's registry,
  and skips indexing lm-eval's ~15k task YAMLs (~20-40 s) when only bundled tasks are asked;
* writes one compact, comparable JSON per model (:func:`compare` tabulates several).

lm-eval is optional (``pip install 'capgap[eval]'``) and imported only when used.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

from capgap.config import load
from capgap.errors import CapgapError
from capgap.models.anymodel import load_any_model
from capgap.models.params import count_params

TASKS_DIR = Path(__file__).parent / "tasks"
# Preferred headline metric when a task is run without a suite entry naming one.
_HEADLINE = ("acc_norm", "acc", "exact_match", "f1", "em", "pass@1", "bits_per_byte",
             "word_perplexity")
# Metrics lm-eval reports as fractions; tables show them in percent, like papers do.
_PERCENT = ("acc", "acc_norm", "exact_match", "f1", "em", "pass@1", "mc1", "mc2")


@dataclass(frozen=True)
class SuiteTask:
    """One benchmark of a suite: the lm-eval task (or group) and how to score it."""

    name: str
    task: str
    num_fewshot: int
    metric: str  # lm-eval's "metric,filter" key, e.g. "acc,none" or "exact_match,strict-match"
    published: dict[str, float] = field(default_factory=dict)  # model -> score in percent


@dataclass(frozen=True)
class Suite:
    """A named list of benchmarks (a YAML file in ``capgap/evaluate/suites``)."""

    name: str
    description: str
    tasks: list[SuiteTask]
    models: list[str] = field(default_factory=list)  # columns of ``published``
    source: str = ""


def suite_names() -> list[str]:
    """Names of the shipped suites."""
    root = resources.files("capgap.evaluate") / "suites"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_suite(name_or_path: str | Path) -> Suite:
    """A shipped suite by name (``paper``) or a suite YAML file by path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = Path(str(resources.files("capgap.evaluate") / "suites" / f"{name_or_path}.yaml"))
        if not path.is_file():
            raise CapgapError(f"no suite {str(name_or_path)!r}; suites: {', '.join(suite_names())}"
                              " (or give a path to a suite YAML)")
    return load(Suite, path)


def require_lm_eval() -> Any:
    """The ``lm_eval`` module, or a one-line install hint."""
    try:
        import lm_eval  # optional and slow to import (datasets, evaluate): only when asked
    except ImportError:
        raise CapgapError("lm-evaluation-harness is not installed: pip install 'capgap[eval]' "
                          "(or pip install 'lm-eval>=0.4.5,<0.5')") from None
    return lm_eval


def task_manager(tasks: Sequence[str]) -> Any:
    """An lm-eval ``TaskManager`` that knows ``tasks``, with the bundled tasks included.

    Indexes only the bundled folder when that is enough (fast); else lm-eval's full
    registry. Unknown names raise with the closest known names.
    """
    require_lm_eval()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_defaults=False, include_path=str(TASKS_DIR))
    if not set(tasks) <= set(manager.all_tasks):
        manager = TaskManager(include_path=str(TASKS_DIR))
    unknown = [t for t in tasks if t not in manager.all_tasks]
    if unknown:
        hints = {t: difflib.get_close_matches(t, manager.all_tasks, n=3) for t in unknown}
        raise CapgapError("unknown lm-eval task(s): " + "; ".join(
            f"{t} (did you mean {', '.join(h)}?)" if h else t for t, h in hints.items()))
    return manager


def _flatten(metrics: dict[str, Any]) -> dict[str, float]:
    """lm-eval's per-task dict without bookkeeping keys and "N/A" stderrs."""
    return {k: float(v) for k, v in metrics.items()
            if "," in k and isinstance(v, (int, float)) and not isinstance(v, bool)}


def headline(metrics: dict[str, float], preferred: str | None = None) -> str | None:
    """The metric key a table shows for a task: the suite's choice, else a common one."""
    if preferred is not None:
        return preferred if preferred in metrics else None
    for name in _HEADLINE:
        for key in metrics:
            if key.split(",")[0] == name:
                return key
    return next((k for k in metrics if "_stderr" not in k), None)


def evaluate_tasks(
    model: nn.Module | str,
    tokenizer: Any = None,
    tasks: Sequence[str] = (),
    suite: str | Suite | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int | str = 8,
    max_length: int | None = None,
    allow_code_execution: bool = False,
    bootstrap_iters: int = 1000,
    dtype: Any = None,
) -> dict[str, Any]:
    """Run lm-eval ``tasks`` (and/or a ``suite``) on a model folder or in-memory model.

    ``num_fewshot`` overrides every task's shot count (suite and task defaults otherwise).
    ``bootstrap_iters`` is lm-eval's bootstrap for non-mean metrics' stderr; 1000 (not its
    100000) gives stderrs to ~2 % relative precision in a fraction of the time.
    Returns the JSON-ready result (see :func:`compare` for reading several).
    """
    lm_eval = require_lm_eval()
    from lm_eval.models.huggingface import HFLM

    suite = load_suite(suite) if isinstance(suite, (str, Path)) else suite
    plan = _plan(tasks, suite, num_fewshot)
    if not plan:
        raise CapgapError("no tasks: give --tasks a,b or --suite NAME")
    name = str(model) if isinstance(model, (str, Path)) else type(model).__name__
    if isinstance(model, (str, Path)):
        model, tokenizer = _load(model, dtype)
    if tokenizer is None:
        raise CapgapError("lm-eval needs the model's tokenizer; pass tokenizer=")
    if allow_code_execution:  # HF `evaluate`'s code_eval refuses to run without it
        os.environ["HF_ALLOW_CODE_EVAL"] = "1"
    manager = task_manager([t for t, _ in plan])
    # An in-memory model stays on its device; HFLM ignores its own device argument then.
    lm = HFLM(pretrained=model.eval(), tokenizer=tokenizer, batch_size=batch_size,
              max_length=max_length)
    results: dict[str, dict[str, float]] = {}
    shots: dict[str, int | None] = {}
    versions: dict[str, Any] = {}
    subtasks: dict[str, list[str]] = {}
    for shot in sorted({s for _, s in plan}, key=lambda s: -1 if s is None else s):
        names = [t for t, s in plan if s == shot]
        out = lm_eval.simple_evaluate(
            model=lm, tasks=names, num_fewshot=shot, limit=limit, task_manager=manager,
            log_samples=False, bootstrap_iters=bootstrap_iters,
            confirm_run_unsafe_code=allow_code_execution)
        for task, metrics in out["results"].items():
            results[task] = _flatten(metrics)
        shots |= out.get("n-shot", {})
        versions |= out.get("versions", {})
        subtasks |= out.get("group_subtasks", {})
    return {
        "model": name,
        "params": count_params(model).to_dict(),
        "suite": suite.name if suite else None,
        "tasks": [t for t, _ in plan],
        "limit": limit,
        "results": results,
        "n_shot": shots,
        "versions": versions,
        "headline": _headlines([t for t, _ in plan], results, subtasks, suite),
        "lm_eval_version": getattr(lm_eval, "__version__", None),
    }


def _plan(tasks: Sequence[str], suite: Suite | None,
          num_fewshot: int | None) -> list[tuple[str, int | None]]:
    """(task, shots) pairs in order, duplicates removed; ``None`` = the task's default."""
    pairs = [(t.task, t.num_fewshot) for t in suite.tasks] if suite else []
    pairs += [(t, None) for t in tasks]
    seen: dict[str, int | None] = {}
    for task, shot in pairs:
        seen.setdefault(task, num_fewshot if num_fewshot is not None else shot)
    return list(seen.items())


def _load(path: str | Path, dtype: Any) -> tuple[nn.Module, Any]:
    if dtype is None:  # bf16 is what these models run in on GPUs; CPUs are faster in fp32
        dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float32
    model, tokenizer = load_any_model(path, dtype=dtype)
    return (model.cuda() if torch.cuda.is_available() else model), tokenizer


def _headlines(tasks: list[str], results: dict[str, dict[str, float]],
               subtasks: dict[str, list[str]], suite: Suite | None) -> dict[str, dict[str, Any]]:
    """Per requested task: the metric a table shows, its value and the published scores.

    A group that aggregates nothing (no ``aggregate_metric_list``) has no score of its own;
    its members are listed instead.
    """
    entries = {t.task: t for t in suite.tasks} if suite else {}
    rows: dict[str, dict[str, Any]] = {}
    for task in tasks:
        entry = entries.get(task)
        metrics = results.get(task, {})
        key = headline(metrics, entry.metric if entry else None)
        if key is None and entry is None and subtasks.get(task):
            rows |= _headlines(subtasks[task], results, subtasks, None)
            continue
        rows[task] = {"name": entry.name if entry else task, "metric": key,
                      "value": metrics.get(key) if key else None,
                      "published": dict(entry.published) if entry else {}}
    return rows


def as_percent(metric: str | None, value: float | None) -> float | None:
    """``value`` in percent for fraction metrics (acc, exact_match, ...), else unchanged."""
    if value is None or metric is None:
        return value
    return 100 * value if metric.split(",")[0] in _PERCENT else value


def compare(results: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows (one per task) and column names for several models' results side by side.

    Published numbers of the suites involved become extra columns, so a run reads directly
    against the paper.
    """
    labels = _labels([r["model"] for r in results])
    published: list[str] = []
    rows: dict[str, dict[str, Any]] = {}
    for label, res in zip(labels, results, strict=True):
        for task, head in res["headline"].items():
            row = rows.setdefault(task, {"task": head["name"], "metric": head["metric"]})
            row[label] = as_percent(head["metric"], head["value"])
            for model, score in head.get("published", {}).items():
                col = f"{model} (paper)"
                row.setdefault(col, score)
                if col not in published:
                    published.append(col)
    return list(rows.values()), labels + published


def _labels(models: list[str]) -> list[str]:
    """Short unique column names: the last path component, else the full name."""
    short = [Path(m).name or m for m in models]
    return short if len(set(short)) == len(short) else models
