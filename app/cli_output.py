"""Standard output for the `kappa` CLI: its write errors told apart from any other OSError."""

from __future__ import annotations

from typing import Any


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
