"""The results layer: what a sweep or study measured, read once, defined once (no torch).

Stages below write rows (the sweep's SQLite store, :mod:`.store`); the law fits from them and
the report renders them. Defined here, once each:

* the row (:class:`CellRow`, the ``cells`` columns; :class:`PartRow` in a study) and its
  reader (:func:`read_rows`);
* baseline pairing and the gain (:mod:`.pairing`);
* the best teacher, its censoring and the seed noise with its floor (:mod:`.optimum`,
  :mod:`.defaults`);
* the H1-H3 verdicts (:mod:`.findings`) and a study's cross-part synthesis (:mod:`.synthesis`);
* what a sweep spent (:mod:`.accounting`);
* the adaptive sweep's choice of cells and its replay on a finished grid (:mod:`.adaptive`).
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {  # imported on first use: the CLI reads the defaults for --help without numpy
    **dict.fromkeys(("LAW_BOOTSTRAP", "LAW_CI", "NOISE_FLOOR", "PAPER_RATIO", "SIGNAL"),
                    "defaults"),
    **dict.fromkeys(("findings", "hypotheses", "law_summary"), "findings"),
    **dict.fromkeys(("Paired", "paired_rows"), "pairing"),
    **dict.fromkeys(("COLUMNS", "CellRow", "PartRow"), "rows"),
    "read_rows": "store",
    **dict.fromkeys(("synthesis", "tag_rows"), "synthesis"),
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"capgap.results.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'capgap.results' has no attribute {name!r}")
