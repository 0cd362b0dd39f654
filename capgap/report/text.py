"""Plain-text tables, for the terminal and the report alike (no torch, nothing heavy: the
CLI imports it for ``--help``)."""

from __future__ import annotations

from typing import Any


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table; columns are (key, header, format spec)."""
    heads = [h for _, h, _ in columns]
    cells = [[format(r[k], f) if r.get(k) is not None else "-" for k, _, f in columns]
             for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h)
              for i, h in enumerate(heads)]
    line = lambda vals: "  ".join(v.rjust(w) for v, w in zip(vals, widths, strict=True))  # noqa: E731
    return "\n".join([line(heads), line(["-" * w for w in widths]), *map(line, cells)])
