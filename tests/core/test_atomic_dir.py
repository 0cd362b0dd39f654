"""Atomic folder writes: a reader sees the old folder or the complete new one, and a crash in
the middle of a swap loses nothing."""

from __future__ import annotations

import os

import pytest

from capgap.io import atomic_dir


def test_a_failed_write_leaves_the_old_folder_and_no_debris(tmp_path) -> None:
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "w.txt").write_text("old")
    with pytest.raises(RuntimeError), atomic_dir(out, overwrite=True) as tmp:
        (tmp / "w.txt").write_text("half")
        raise RuntimeError("killed")
    assert (out / "w.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_overwrite_is_explicit(tmp_path) -> None:
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "w.txt").write_text("old")
    with pytest.raises(FileExistsError), atomic_dir(out) as tmp:
        (tmp / "w.txt").write_text("new")
    with atomic_dir(out, overwrite=True) as tmp:
        (tmp / "w.txt").write_text("new")
    assert (out / "w.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_a_swap_cut_between_its_renames_is_recovered(tmp_path) -> None:
    out = tmp_path / "model"
    with atomic_dir(out) as tmp:
        (tmp / "w.txt").write_text("old")
    os.replace(out, tmp_path / ".model.old")  # the state a crash between the renames leaves
    with pytest.raises(FileExistsError), atomic_dir(out) as tmp:  # the old artefact is back
        (tmp / "w.txt").write_text("new")
    assert (out / "w.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
