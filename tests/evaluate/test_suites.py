"""Suites: shipped YAMLs load, and every task name resolves in lm-eval's registry offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from capgap.errors import CapgapError
from capgap.evaluate.lm_eval import compare, load_suite, suite_names


def test_paper_suite_matches_the_paper():
    suite = load_suite("paper")
    assert [t.name for t in suite.tasks] == ["MMLU", "CEval", "DROP", "BBH", "GSM8K", "HumanEval"]
    assert [t.num_fewshot for t in suite.tasks] == [5, 5, 3, 3, 8, 0]
    assert {m for t in suite.tasks for m in t.published} == set(suite.models)
    assert suite.tasks[0].published == {"MiniMA-3B": 28.51, "LLaMA2-7B": 46.00}


def test_unknown_suite_names_the_shipped_ones():
    with pytest.raises(CapgapError, match="paper"):
        load_suite("nope")
    assert {"paper", "offline"} <= set(suite_names())


def test_compare_adds_published_columns():
    suite = load_suite("paper")
    res = {"model": "/runs/minima", "headline": {t.task: {
        "name": t.name, "metric": t.metric, "value": 0.25, "published": t.published}
        for t in suite.tasks}}
    rows, cols = compare([res])
    assert cols == ["minima", "MiniMA-3B (paper)", "LLaMA2-7B (paper)"]
    assert rows[0]["minima"] == pytest.approx(25.0)  # fractions shown in percent
    assert rows[0]["LLaMA2-7B (paper)"] == 46.00


def _declared_metrics(entry) -> tuple[set[str], set[str]]:  # noqa: ANN001 - lm-eval Entry
    """(metric names, filter names) a task or group YAML reports; functions match anything."""
    cfg = entry.cfg or {}
    metrics = cfg.get("metric_list") or cfg.get("aggregate_metric_list") or []
    names = {m["metric"] for m in metrics}
    filters = {f["name"] for f in cfg.get("filter_list") or []}
    filters |= {m["filter_list"] for m in cfg.get("aggregate_metric_list") or [] if "filter_list" in m}
    return names, filters or {"none"}


@pytest.mark.parametrize("suite_name", ["paper", "offline"])
def test_suite_tasks_resolve_offline(suite_name):
    """Catches an lm-eval upgrade that renames a task, a group member, or a metric/filter.

    Only name resolution: no dataset is opened. To stay fast it indexes just the top-level
    task folders whose YAML declares the names, not lm-eval's whole ~15k-file registry.
    """
    tasks_pkg = pytest.importorskip("lm_eval.tasks")
    from lm_eval.tasks import TaskManager

    from capgap.evaluate.lm_eval import TASKS_DIR

    suite = load_suite(suite_name)
    names = [t.task for t in suite.tasks]
    root = Path(tasks_pkg.__file__).parent
    pattern = re.compile(r"^(?:task|group):\s*['\"]?(" + "|".join(map(re.escape, names))
                         + r")['\"]?\s*$", re.M)
    dirs = {root / p.relative_to(root).parts[0] for p in root.glob("*/**/*.yaml")
            if pattern.search(p.read_text("utf-8", errors="ignore"))}
    manager = TaskManager(include_defaults=False, include_path=[*map(str, sorted(dirs)), str(TASKS_DIR)])
    for task in suite.tasks:
        entry = manager.task_index.get(task.task)
        assert entry is not None, f"{task.name}: lm-eval has no task or group {task.task!r}"
        members = (entry.cfg or {}).get("task") if entry.kind.name == "GROUP" else []
        missing = [m for m in members if isinstance(m, str) and m not in manager.all_tasks]
        assert not missing, f"{task.task}: members not found {missing[:5]}"
        metric, _, filt = task.metric.partition(",")
        names_, filters = _declared_metrics(entry)
        assert metric in names_ or any("/" in n or "." in n for n in names_), (task.task, names_)
        assert filt in filters, (task.task, filters)
