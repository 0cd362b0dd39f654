"""User-facing errors.

Anything a user can cause (bad flags, bad files, bad configs) raises :class:`CapgapError`.
The CLI prints its message on one line and exits with status 2, never a traceback.
"""

from __future__ import annotations


class CapgapError(Exception):
    """An error caused by the user's input; its message is one actionable line."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
