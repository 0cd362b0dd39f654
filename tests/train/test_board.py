"""The optional TensorBoard mirror: the same numbers as metrics.jsonl, also after a resume,
and a one-line error when it is asked for but not installed."""

from __future__ import annotations

import shutil
import sys

import pytest
import torch

from capgap.errors import CapgapError
from capgap.runs import RunDir
from capgap.train.loop import TrainConfig, train
from tests.train.test_loop import RandomBatches, step_fn, tiny_model

CFG = TrainConfig(tokens=16 * 4 * 8, micro_batch_size=4, checkpoint_every=3, keep_checkpoints=3,
                  eval_every=4, threads=1, tensorboard=True)


def evaluate(model) -> dict[str, float]:  # noqa: ANN001
    x = RandomBatches().batch(999)
    with torch.no_grad():
        return {"loss": float(model(input_ids=x, labels=x).loss)}


def test_tensorboard_mirrors_metrics_jsonl_across_a_resume(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = RunDir.open(tmp_path / "r")
    train(tiny_model(), RandomBatches(), step_fn, CFG, run, eval_fn=evaluate)
    for ck in run.checkpoints()[1:]:  # cut back to step 3, then resume to the end
        shutil.rmtree(ck)
    train(tiny_model(), RandomBatches(), step_fn, CFG, RunDir.open(tmp_path / "r", resume=True),
          eval_fn=evaluate)

    board = EventAccumulator(str(tmp_path / "r" / "tensorboard"))
    board.Reload()
    recs = [r for r in run.metrics() if "loss" in r]
    assert [r["step"] for r in recs] == list(range(1, 9))
    for tag, key in (("train/loss", "loss"), ("train/lr", "lr"), ("val/loss", "val_loss")):
        want = [(r["step"], r[key]) for r in recs if key in r]
        got = [(e.step, e.value) for e in board.Scalars(tag)]
        assert [s for s, _ in got] == [s for s, _ in want], tag
        assert [v for _, v in got] == pytest.approx([v for _, v in want], rel=1e-6), tag


def test_tensorboard_asked_for_but_missing_is_a_one_line_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import now fails
    with pytest.raises(CapgapError, match=r"^train.tensorboard is on but the tensorboard "
                                          r"package is not installed: pip install "
                                          r"'capgap\[tensorboard\]'"):
        train(tiny_model(), RandomBatches(), step_fn, CFG, RunDir.open(tmp_path / "r"))
    assert not (tmp_path / "r" / "metrics.jsonl").exists()  # failed before any write
