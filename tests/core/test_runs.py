"""The shared run-folder convention: resume / overwrite / completion rules."""

from __future__ import annotations

import os
import time

import pytest

from capgap.errors import CapgapError
from capgap.runs import RunDir, is_complete


def test_fresh_unfinished_finished(tmp_path):
    out = tmp_path / "run"
    run = RunDir.open(out)
    run.write_config({"a": 1})
    run.log({"step": 1, "loss": 2.0})
    with pytest.raises(CapgapError, match="unfinished run; use --resume"):
        RunDir.open(out)
    again = RunDir.open(out, resume=True)
    assert again.resumed and not again.complete
    again.finish({"ok": True})
    assert is_complete(out)
    with pytest.raises(CapgapError, match="finished run; use --overwrite"):
        RunDir.open(out)
    assert RunDir.open(out, resume=True).complete
    fresh = RunDir.open(out, overwrite=True)
    assert not fresh.resumed and not any(out.iterdir())


def test_resume_refuses_changed_config(tmp_path):
    run = RunDir.open(tmp_path / "r")
    run.write_config({"train": {"tokens": 10}})
    again = RunDir.open(tmp_path / "r", resume=True)
    with pytest.raises(CapgapError, match="config differs at 'train.tokens'"):
        again.write_config({"train": {"tokens": 11}})


def test_resume_accepts_moved_paths_it_is_told_are_the_same(tmp_path):
    """A sweep cell's teacher and student paths may move (a copied family); its key vouches
    they are the same models, so the resume keeps its checkpoints and logs the move."""
    run = RunDir.open(tmp_path / "r")
    run.write_config({"teacher": "a/T1", "train": {"tokens": 10}})
    again = RunDir.open(tmp_path / "r", resume=True)
    assert again.write_config({"teacher": "b/T1", "train": {"tokens": 10}},
                              relocatable=("teacher",)) == []
    assert "b/T1" in (tmp_path / "r" / "config.yaml").read_text()
    assert "config_relocated" in (tmp_path / "r" / "metrics.jsonl").read_text()
    with pytest.raises(CapgapError, match="config differs at 'train.tokens'"):
        again.write_config({"teacher": "c/T1", "train": {"tokens": 11}}, relocatable=("teacher",))
    with pytest.raises(CapgapError, match="config differs at 'teacher'"):
        RunDir.open(tmp_path / "r", resume=True).write_config(
            {"teacher": "c/T1", "train": {"tokens": 10}})


def test_foreign_folder_is_refused(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "notes.txt").write_text("mine")
    with pytest.raises(CapgapError, match="holds no capgap run"):
        RunDir.open(tmp_path / "x")


def test_metrics_truncate_and_torn_line(tmp_path):
    run = RunDir.open(tmp_path / "r")
    for s in range(1, 5):
        run.log({"step": s})
    with open(run.path / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')  # a kill mid-write
    assert [r["step"] for r in run.metrics()] == [1, 2, 3, 4]
    run.truncate_metrics(2)
    assert [r["step"] for r in run.metrics()] == [1, 2]


DRIVER = """
import concurrent.futures as cf, multiprocessing as mp, sys, time
from capgap.runs import use_threads
pool = cf.ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"),
                              initializer=use_threads, initargs=(1,))
import os
print(pool.submit(os.getpid).result(), flush=True)
pool.submit(time.sleep, 120)
time.sleep(120)
"""


def test_pool_workers_exit_when_their_driver_is_killed():
    """kill -9 of a sweep driver must not leave its workers training on (use_threads)."""
    import signal
    import subprocess
    import sys

    driver = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True)
    try:
        worker = int(driver.stdout.readline())
        os.kill(worker, 0)  # alive while the driver is
        driver.send_signal(signal.SIGKILL)
        driver.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.kill(worker, 0)
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            os.kill(worker, signal.SIGKILL)
            raise AssertionError("the worker outlived its driver by 20 s")
    finally:
        driver.kill()


def test_resume_accepts_a_field_added_since_at_its_default(tmp_path):
    """A run started before a config field existed resumes when the field keeps its default
    (the run already behaved that way); any other value, or a changed field, is refused."""
    import yaml

    from capgap.train.pretrain import PretrainConfig

    run = RunDir.open(tmp_path / "r")
    run.write_config(PretrainConfig())
    stored = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())
    stored.pop("tokens_per_param")  # as an older capgap wrote it
    (tmp_path / "r" / "config.yaml").write_text(yaml.safe_dump(stored))
    again = RunDir.open(tmp_path / "r", resume=True)
    assert again.write_config(PretrainConfig()) == []
    with pytest.raises(CapgapError, match="config differs at 'tokens_per_param'"):
        again.write_config(PretrainConfig(tokens_per_param=20))
