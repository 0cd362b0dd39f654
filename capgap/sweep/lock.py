"""One driver per sweep folder.

Two drivers on one folder would both run the same cells and race on SQLite, so the driver
holds an exclusive ``flock`` on ``DIR/.sweep.lock`` for its whole run. The kernel drops the
lock when the process dies (SIGKILL included), so a crashed sweep never blocks its resume.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from capgap.errors import CapgapError

LOCK_NAME = ".sweep.lock"


@contextlib.contextmanager
def driver_lock(out: Path) -> Iterator[None]:
    """Hold the folder's driver lock, or fail at once naming the process that holds it."""
    path = out / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
            raise CapgapError(f"{out} is being swept by pid {holder}; wait for it to finish "
                              "(re-running afterwards resumes)") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock
