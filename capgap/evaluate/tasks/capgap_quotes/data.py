"""Datasets of the bundled tasks, read from the JSONL files beside this module.

lm-eval calls these through ``custom_dataset: !function data.load_*`` instead of
``datasets.load_dataset("json", ...)``: that keeps the tasks independent of the working
directory and of the hub (no builder script, no download, no cache lookup).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

HERE = Path(__file__).parent


def _load(name: str) -> Any:
    import datasets

    rows = [json.loads(line) for line in (HERE / name).read_text("utf-8").splitlines() if line]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})


def load_quotes(**_: Any) -> Any:
    """``capgap_quotes``: ``context``, ``choices``, ``label`` (index of the true ending)."""
    return _load("quotes.jsonl")


def load_passages(**_: Any) -> Any:
    """``capgap_kjv_ppl``: ``text`` of each passage."""
    return _load("passages.jsonl")
