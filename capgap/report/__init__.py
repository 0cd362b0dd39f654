"""Reports of a sweep: the terminal summary table and ``DIR/report/index.html``; a study's
views. The report renders what :mod:`capgap.results` computed and :mod:`capgap.law` fitted.

Names are imported on first use, so ``capgap.report.text`` (which the CLI imports for
``--help``) does not pull in the law and numpy.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {"build_report": "html", "summary_table": "tables"}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"capgap.report.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'capgap.report' has no attribute {name!r}")
