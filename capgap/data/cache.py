"""Where capgap keeps derived artefacts (tokenizers, token streams) between runs.

Entries are content-addressed folders: the folder name is a hash of everything that
determines its contents, so an entry is never stale and never needs invalidating.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from capgap.io import atomic_dir


def cache_dir() -> Path:
    """The cache root: ``$CAPGAP_CACHE`` if set, else ``~/.cache/capgap``."""
    root = os.environ.get("CAPGAP_CACHE") or Path.home() / ".cache" / "capgap"
    return Path(root).expanduser()


def build_once(path: Path, build: Callable[[Path], None]) -> Path:
    """Create the cache entry ``path`` with ``build(tmp_folder)`` unless it already exists.

    The entry appears atomically, so readers never see half an entry. If another process
    finished the same entry first, its copy wins and ours is discarded (same key, same
    contents).
    """
    if path.is_dir():
        return path
    try:
        with atomic_dir(path) as tmp:
            build(tmp)
    except FileExistsError:
        if not path.is_dir():
            raise
    return path
