"""Output of the `kappa` CLI: its standard output's write errors told apart from any other
OSError, the progress lines of long commands when no bar can be drawn, and counts in words."""

from __future__ import annotations

import logging
from typing import Any

# Progress lines off a terminal (produce, replay, export): INFO, which the CLI shows for this
# logger alone; everything else it shows from WARNING up.
PROGRESS = logging.getLogger("kappa.progress")


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """`n` (with thousands separators) and its noun, singular for exactly one: "1 result",
    "2,000 results" (`plural` for a noun that does not just take an s)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


class OutputFailed(Exception):
    """Standard output cannot be written (a full disk, a device error): not a bug of ours."""


class GuardedOutput:
    """Standard output whose write errors, other than a closed pipe, raise `OutputFailed`, so
    that `main` can tell them from an OSError anywhere else (which is a bug, with a traceback)."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputFailed(e.strerror or str(e)) from None

    def flush(self) -> None:
        try:
            self._stream.flush()
        except BrokenPipeError:
            raise
        except OSError as e:
            raise OutputFailed(e.strerror or str(e)) from None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)
