"""The run-folder convention shared by every stage.

A run folder holds::

    config.yaml        the fully resolved config the run used (written first)
    metrics.jsonl      one JSON object per logged event (step, loss, tokens/s, eval, ...)
    checkpoints/       step-00000123/ folders, each complete or absent (atomic rename)
    <artefacts>        whatever the stage produces (a model folder, scores, a report)
    DONE.json          the completion marker, written last, with the run's summary

Resume semantics, identical for every stage:

* a folder with ``DONE.json`` is finished: ``--resume`` returns it untouched, anything else
  needs ``--overwrite``;
* a folder with a run but no ``DONE.json`` is unfinished: ``--resume`` continues it from its
  newest checkpoint; without a flag it is an error that suggests ``--resume``;
* ``--overwrite`` discards whatever is there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from capgap import config as cfgmod
from capgap.errors import CapgapError
from capgap.io import dumps_line, write_json, write_text

DONE = "DONE.json"
CONFIG = "config.yaml"
METRICS = "metrics.jsonl"
CHECKPOINTS = "checkpoints"


def is_complete(path: str | Path) -> bool:
    """True when ``path`` holds a finished run (its completion marker exists)."""
    return (Path(path) / DONE).is_file()


def _holds_run(path: Path) -> bool:
    return any((path / name).exists() for name in (CONFIG, METRICS, CHECKPOINTS, DONE))


class RunDir:
    """One stage's output folder; see the module docstring for the convention."""

    def __init__(self, path: Path, resumed: bool, complete: bool) -> None:
        self.path = path
        self.resumed = resumed
        self.complete = complete

    @classmethod
    def open(
        cls, path: str | Path, *, resume: bool = False, overwrite: bool = False
    ) -> RunDir:
        """Prepare ``path`` for a run, applying the shared resume/overwrite rules."""
        path = Path(path)
        if resume and overwrite:
            raise CapgapError("--resume and --overwrite are mutually exclusive")
        if path.exists() and not path.is_dir():
            raise CapgapError(f"output path {path} exists and is not a folder")
        if path.exists() and any(path.iterdir()):
            if overwrite:
                shutil.rmtree(path)
            elif is_complete(path):
                if resume:
                    return cls(path, resumed=True, complete=True)
                raise CapgapError(
                    f"{path} already holds a finished run; use --overwrite to replace it"
                )
            elif _holds_run(path):
                if not resume:
                    raise CapgapError(
                        f"{path} holds an unfinished run; use --resume to continue it "
                        "or --overwrite to discard it"
                    )
                return cls(path, resumed=True, complete=False)
            else:
                raise CapgapError(
                    f"{path} is not empty and holds no capgap run; choose another --out "
                    "or pass --overwrite"
                )
        path.mkdir(parents=True, exist_ok=True)
        return cls(path, resumed=False, complete=False)

    # -- config -----------------------------------------------------------------------
    def write_config(self, config: Any, force: bool = False,
                     relocatable: tuple[str, ...] = ()) -> list[str]:
        """Write the resolved config; on resume, refuse one that differs unless ``force``.

        Returns the differing keys (dotted paths). With ``force`` the new config replaces the
        stored one and the change is logged, so the folder still says what the run used.
        ``relocatable`` keys (paths whose identity the caller vouches for, e.g. a sweep cell's
        teacher and student, fixed by its key) may differ: logged, stored, never refused.
        """
        target = self.path / CONFIG
        new = cfgmod.to_dict(config)
        if self.resumed and target.exists():
            old = yaml.safe_load(target.read_text(encoding="utf-8")) or {}
            diffs = [d for d in _differences(old, new) if not _new_default(d, old, new, config)]
            moved = [d for d in diffs if d in relocatable]
            diffs = [d for d in diffs if d not in relocatable]
            if moved and not diffs:
                self.log({"event": "config_relocated", "keys": moved})
                cfgmod.dump(config, target)
                return []
            if not diffs:
                return []
            if not force:
                keys = ", ".join(f"'{d}'" for d in diffs)
                raise CapgapError(
                    f"cannot resume {self.path}: config differs at {keys} from the one it "
                    "started with; use the same config, --force to continue with the new one, "
                    "or --overwrite"
                )
            self.log({"event": "config_changed", "keys": diffs})
            cfgmod.dump(config, target)
            return diffs
        cfgmod.dump(config, target)
        return []

    # -- metrics ----------------------------------------------------------------------
    def log(self, record: dict[str, Any]) -> None:
        """Append one JSON line to metrics.jsonl (flushed, so a kill loses at most it)."""
        record = {"time": round(time.time(), 3), **record}
        with open(self.path / METRICS, "a", encoding="utf-8") as f:
            f.write(dumps_line(record))
            f.flush()

    def metrics(self) -> list[dict[str, Any]]:
        """All complete records of metrics.jsonl (a torn last line is skipped)."""
        path = self.path / METRICS
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def truncate_metrics(self, step: int) -> None:
        """Drop records logged after ``step`` (they are redone on resume)."""
        kept = [r for r in self.metrics() if int(r.get("step", 0)) <= step]

        write_text(self.path / METRICS, "".join(dumps_line(r) for r in kept))

    # -- checkpoints ------------------------------------------------------------------
    @property
    def checkpoint_root(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first."""
        root = self.checkpoint_root
        if not root.is_dir():
            return []
        return sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith("step-"))

    def latest_checkpoint(self) -> Path | None:
        ckpts = self.checkpoints()
        return ckpts[-1] if ckpts else None

    def checkpoint_path(self, step: int) -> Path:
        return self.checkpoint_root / f"step-{step:08d}"

    def prune_checkpoints(self, keep: int) -> None:
        """Keep the newest ``keep`` checkpoints."""
        for old in self.checkpoints()[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)

    # -- completion -------------------------------------------------------------------
    def finish(self, summary: dict[str, Any]) -> None:
        """Write the completion marker last; the run is finished once it exists."""
        write_json(self.path / DONE, {"finished": time.strftime("%Y-%m-%dT%H:%M:%S"), **summary})
        self.complete = True

    def summary(self) -> dict[str, Any]:
        """The summary stored in DONE.json (empty for an unfinished run)."""
        path = self.path / DONE
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _new_default(dotted: str, old: dict, new: dict, config: Any) -> bool:
    """A key the stored config lacks (written by an older capgap) whose new value is the
    field's default: the run used that behaviour already, so resuming is safe."""
    if not dataclasses.is_dataclass(config):
        return False
    default = cfgmod.to_dict(type(config)())
    found = []
    for tree in (old, new, default):
        for part in dotted.split("."):
            tree = tree.get(part, _MISSING) if isinstance(tree, dict) else _MISSING
        found.append(tree)
    return found[0] is _MISSING and found[1] is not _MISSING and found[1] == found[2]


_MISSING = object()


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Every dotted key at which two config trees differ, sorted."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in old or key not in new:
                out.append(where)
            else:
                out.extend(_differences(old[key], new[key], where))
        return out
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        old, new = list(old), list(new)
    return [] if old == new else [prefix or "<root>"]


def iter_runs(root: str | Path) -> Iterator[Path]:
    """Every finished run folder below ``root``."""
    for done in sorted(Path(root).rglob(DONE)):
        yield done.parent


def use_threads(threads: int) -> None:
    """The initialiser of every worker pool (teacher pretraining, sweep cells): pin this
    process (and what it spawns) to ``threads`` torch threads, and exit when the driver dies.

    A driver killed by a signal it cannot handle (``kill -9``, a lost session) would otherwise
    leave its workers training on, fighting a resumed driver for the same cores and folders.
    Their artefacts are written atomically, so an abrupt exit loses only unsaved steps."""
    import torch  # only pool workers need it; run folders are read by torch-free tools

    os.environ["CAPGAP_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    parent = os.getppid()
    threading.Thread(target=_exit_with_parent, args=(parent,), daemon=True,
                     name="capgap-parent-watch").start()


def _exit_with_parent(parent: int, every_s: float = 1.0) -> None:
    while os.getppid() == parent:
        time.sleep(every_s)
    os._exit(70)  # EX_SOFTWARE: the driver is gone


def env_threads() -> int:
    """Threads torch should use: CAPGAP_THREADS, else all visible cores."""
    value = os.environ.get("CAPGAP_THREADS")
    return int(value) if value else (os.cpu_count() or 1)
