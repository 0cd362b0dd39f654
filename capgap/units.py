"""Reading and printing sizes and counts: ``"124M"``, ``"1.5B"``, ``"2.5e6"``,
``"2,000,000"`` <-> numbers, the same for every flag and config of every stage (no torch)."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

from capgap.errors import CapgapError

_SUFFIX = {"k": 1e3, "m": 1e6, "b": 1e9, "g": 1e9, "t": 1e12}
_SHOW = [(1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")]


def parse_size(text: str | float | int) -> float:
    """A positive size from ``"124M"``, ``"1.5B"``, ``"300k"``, ``"2.5e6"``, ``"2,000,000"``
    or a number.

    The suffix only multiplies (k=1e3, M=1e6, B/G=1e9, T=1e12); the unit stays whatever
    the number counts (parameters, tokens, or the unit a law was fitted in).
    """
    raw = str(text).strip().replace("_", "").replace(",", "")
    scale = 1.0
    if raw and raw[-1].lower() in _SUFFIX:
        scale, raw = _SUFFIX[raw[-1].lower()], raw[:-1]
    try:
        value = float(raw) * scale
    except ValueError:
        raise CapgapError(f"not a size: {text!r} (use e.g. 124M, 1.5B, 3e9)") from None
    if not math.isfinite(value) or value <= 0:
        raise CapgapError(f"a size must be a positive number, got {text!r}")
    return value


def parse_count(text: str | float | int) -> int:
    """A positive whole count (parameters, tokens) written as :func:`parse_size` reads it."""
    return int(round(parse_size(text)))


def flag_type(parse: Callable[[str], object]) -> Callable[[str], object]:
    """``parse`` as an argparse ``type=``: its one-line error becomes argparse's."""

    def parse_flag(text: str) -> object:
        try:
            return parse(text)
        except CapgapError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parse_flag.__name__ = parse.__name__
    return parse_flag


def parse_sizes(text: str) -> list[float]:
    """Comma-separated sizes, e.g. ``"124M,355M,1.5B"``."""
    parts = [p for p in (s.strip() for s in text.split(",")) if p]
    if not parts:
        raise CapgapError(f"no sizes in {text!r} (use e.g. 124M,355M,1.5B)")
    return [parse_size(p) for p in parts]


def format_size(value: float | None, si: bool = True) -> str:
    """``1.5e9 -> "1.50B"`` (three significant figures); ``si=False`` prints a plain number
    (for units given by the user, e.g. millions, where a suffix would mislead)."""
    if value is None or not math.isfinite(value):
        return "n/a"
    if si:
        for scale, suffix in _SHOW:
            if abs(value) >= scale:
                return f"{value / scale:.3g}{suffix}"
    return f"{value:.4g}"
