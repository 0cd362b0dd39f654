"""An optional TensorBoard mirror of a run's metrics (``train.tensorboard: true``).

``metrics.jsonl`` stays the record every reader of capgap uses; this only copies each step
record's numbers into ``DIR/tensorboard/`` so a user can watch a run in TensorBoard. Train
metrics appear as ``train/<name>``, held-out ones (``val_<name>``) as ``val/<name>``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from capgap.errors import CapgapError

FOLDER = "tensorboard"
_NOT_SCALARS = {"step", "time"}


def writer_class() -> type:
    """torch's SummaryWriter, or the one-line error if the optional tensorboard package is
    missing (imported here, not at the top: most runs never ask for it)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise CapgapError(
            "train.tensorboard is on but the tensorboard package is not installed: "
            "pip install 'capgap[tensorboard]' (or set train.tensorboard: false)"
        ) from e
    return SummaryWriter


class Board:
    """Writes each step record's numbers to TensorBoard event files under ``run_dir``."""

    def __init__(self, writer: type, run_dir: Path, start_step: int) -> None:
        """``writer``: :func:`writer_class`'s answer; ``start_step``: the step a resumed run
        continues from (events the interrupted run logged after it are purged, as
        ``metrics.jsonl`` drops those records)."""
        self.writer = writer(log_dir=str(run_dir / FOLDER), flush_secs=10,
                             purge_step=start_step + 1 if start_step else None)

    def log(self, record: dict[str, Any]) -> None:
        step = record["step"]
        for key, value in record.items():
            if key in _NOT_SCALARS or isinstance(value, bool):
                continue
            if isinstance(value, int | float) and math.isfinite(value):
                tag = f"val/{key[4:]}" if key.startswith("val_") else f"train/{key}"
                self.writer.add_scalar(tag, value, step)

    def close(self) -> None:
        self.writer.close()
