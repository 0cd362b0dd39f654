"""Arrows point down the pipeline: data -> models -> prune -> distill -> evaluate -> sweep ->
study -> law -> report, with train/ (the shared loop) under distill and results/ (torch-free
rows and their definitions) under the law and the report. A package never imports one above
it, and the light layers load no torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import capgap

ROOT = Path(capgap.__file__).parent
STAGES = ("capgap.sweep", "capgap.study", "capgap.train", "capgap.distill", "capgap.prune",
          "capgap.cli")

# package -> the packages it must not import (anywhere in it, at the top or in a function)
NOT_ABOVE = {
    "results": (*STAGES, "capgap.law", "capgap.report"),
    "law": (*STAGES, "capgap.report"),
    "report": STAGES,
    "models": ("capgap.prune", "capgap.distill", "capgap.train", "capgap.sweep"),
    "train": ("capgap.distill", "capgap.sweep", "capgap.study"),
    "sweep": ("capgap.report", "capgap.study", "capgap.cli"),
}


def _imports(package: str) -> set[tuple[str, str]]:
    found = set()
    for path in (ROOT / package).rglob("*.py"):
        name = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                found.add((name, node.module))
            elif isinstance(node, ast.Import):
                found.update((name, a.name) for a in node.names)
    return found


def _is_under(module: str, packages: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


@pytest.mark.parametrize("package", sorted(NOT_ABOVE))
def test_no_package_imports_one_above_it(package):
    bad = sorted(f"{f}: {m}" for f, m in _imports(package) if _is_under(m, NOT_ABOVE[package]))
    assert not bad, bad


def _loaded(code: str, modules: tuple[str, ...]) -> list[str]:
    """Which of ``modules`` a fresh interpreter has loaded after running ``code``."""
    probe = f"{code}; import sys; print(' '.join(m for m in {modules!r} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return out.split()


def test_results_law_and_the_package_load_without_torch():
    assert _loaded("import capgap, capgap.results, capgap.law", ("torch", "transformers")) == []


def test_the_cli_parser_loads_nothing_heavy():
    """``capgap --help`` imports every stage's CLI module: their APIs load on use."""
    heavy = ("torch", "transformers", "numpy", "scipy", "matplotlib", "capgap.law")
    assert _loaded("from capgap.cli import build_parser; build_parser()", heavy) == []


def test_the_package_exports_its_api_lazily():
    stages = ("capgap.prune", "capgap.sweep", "capgap.law", "capgap.results", "numpy")
    assert _loaded("import capgap", stages) == []
    assert all(getattr(capgap, name) is not None for name in capgap.__all__)
    assert capgap.run_sweep is capgap.sweep.run_sweep and capgap.score is capgap.prune.score
    assert callable(capgap.prune.prune) and callable(capgap.distill.distill)
