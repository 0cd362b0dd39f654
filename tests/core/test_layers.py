"""Arrows point down the pipeline: the results layer, the law and the report read results;
they never import the stages that train models, and the first two load no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import capgap

ROOT = Path(capgap.__file__).parent
ABOVE = ("capgap.sweep", "capgap.train", "capgap.distill", "capgap.prune", "capgap.cli")


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add((path.name, node.module))
            elif isinstance(node, ast.Import):
                found.update((path.name, a.name) for a in node.names)
    return found


def test_results_law_and_report_import_no_stage_above_them():
    for package in ("results", "law", "report"):
        bad = sorted(f"{package}/{f}: {m}" for f, m in _imports(package)
                     if m.startswith(ABOVE))
        assert not bad, bad


def test_results_and_law_load_without_torch():
    code = "import sys, capgap.results, capgap.law; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "False"
