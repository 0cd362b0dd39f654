"""The best teacher of a student size, its censoring, and the seed noise it is read against —
the rules every consumer (the law's fit, a sweep's findings, a study's synthesis, the
report's tables) applies, defined once.

* **Shared seeds.** A size's teachers are compared on the seeds they all have: while a
  sweep is still filling in seeds, a teacher with an extra seed would be judged on another
  sample of data orders than its neighbours.
* **Best teacher.** The lowest mean loss over those seeds; ties go to the smaller teacher.
* **Censoring.** A best teacher at the smallest or largest teacher tried (or a single
  teacher) is censored: the true optimum may lie beyond the range.
* **Seed noise.** The largest sample standard deviation over a size's teachers, never
  below the floor (:data:`~capgap.results.defaults.NOISE_FLOOR`), which also stands in when
  no teacher has two seeds. An effect counts when it exceeds ``SIGNAL`` x noise.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from capgap.results.defaults import NOISE_FLOOR, SIGNAL

T = TypeVar("T")


def shared_seeds(items: list[T], teacher: Callable[[T], Hashable],
                 seed: Callable[[T], Hashable | None]) -> list[T]:
    """``items`` restricted to the seeds every teacher has; all of them when some seed is
    unknown or no seed is shared (nothing to balance on)."""
    by_teacher: dict[Hashable, set[Hashable]] = {}
    for it in items:
        s = seed(it)
        if s is None:
            return list(items)
        by_teacher.setdefault(teacher(it), set()).add(s)
    shared = set.intersection(*by_teacher.values()) if by_teacher else set()
    return [it for it in items if seed(it) in shared] if shared else list(items)


def shared_seeds_by(items: list[T], group: Callable[[T], Hashable],
                    teacher: Callable[[T], Hashable],
                    seed: Callable[[T], Hashable | None]) -> dict[Hashable, list[T]]:
    """``items`` per ``group`` (a student size), each restricted by :func:`shared_seeds`."""
    groups: dict[Hashable, list[T]] = {}
    for it in items:
        groups.setdefault(group(it), []).append(it)
    return {g: shared_seeds(v, teacher, seed) for g, v in groups.items()}


def argmin_index(loss: np.ndarray) -> np.ndarray:
    """Index of the best (lowest) column per row of ``loss`` (B, J); ties -> smaller teacher
    (teachers ascending along the columns)."""
    return np.argmin(loss, axis=1)


def best_index(means: Iterable[float]) -> int:
    """The best of one size's teacher means (ascending teachers); ties -> smaller teacher."""
    return int(argmin_index(np.asarray([list(means)], dtype=float))[0])


def censored_edge(best: int, n_teachers: int) -> str | None:
    """``low`` / ``high`` when the best teacher is the smallest / largest tried, ``both``
    with a single teacher, None inside the range."""
    last = n_teachers - 1
    return "both" if last == 0 else "low" if best == 0 else "high" if best == last else None


@dataclass(frozen=True)
class Noise:
    """A size's seed noise: the value effects are read against, and what it rests on."""

    value: float  # max(largest seed sd, floor)
    measured: bool  # some teacher has two or more seeds
    seed_sd: float | None  # the largest seed sd measured, None when none was


def seed_noise(sds: Iterable[float | None], floor: float = NOISE_FLOOR) -> Noise:
    """The noise of a size from its teachers' seed sds (None: a single seed)."""
    known = [s for s in sds if s is not None]
    return Noise(max([*known, floor]), bool(known), max(known) if known else None)


def exceeds_noise(effect: float, noise: float, signal: float = SIGNAL) -> bool:
    """Whether ``effect`` counts: more than ``signal`` x ``noise``."""
    return effect > signal * noise
