"""The law figure, and that ``capgap.law`` stays free of torch and eager matplotlib."""

from __future__ import annotations

import subprocess
import sys

import pytest

from capgap.errors import CapgapError
from capgap.law import Cell, fit_law, fit_points, plot_law


def _is_png(path) -> bool:
    return path.read_bytes()[:4] == b"\x89PNG"


def test_plots_a_law_a_points_law_and_an_insufficient_one(tmp_path, make_cells):
    laws = {
        "cells": fit_law(make_cells(n_sizes=4, seeds=2), n_boot=50),
        "points": fit_points([(1, 2.4), (2, 5.1), (4, 10.2)], n_boot=50),
        "insufficient": fit_law(make_cells(n_sizes=2, seeds=2), n_boot=50),
        "unbounded": fit_law([Cell(1e6, t, 5.0 - t / 1e8, seed="0")  # best at the high edge
                              for t in (2e6, 4e6, 8e6)], n_boot=50),
    }
    assert laws["unbounded"]["bracket"]["sizes"][0]["hi"] is None
    for name, law in laws.items():
        path = plot_law(law, tmp_path / f"{name}.png")
        assert _is_png(path), name


def test_unknown_plot_format_is_refused(tmp_path, make_cells):
    with pytest.raises(CapgapError, match="png"):
        plot_law(fit_points([(1, 2), (2, 4), (3, 6)], n_boot=10), tmp_path / "law.gif")
    assert not list(tmp_path.iterdir())


def test_importing_capgap_law_pulls_in_neither_torch_nor_matplotlib():
    code = ("import sys, capgap.law, capgap.cli.law; "
            "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
