"""Non-blocking flock on a lock file in a directory: how Kappa keeps two processes from the
same state directory, or two exports from the same output directory.

flock locks belong to the open file description, so a second lock of the same file fails
even from the same process; closing the descriptor releases it, as does the process exiting.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from app.atomic_file import made_directories
from app.settings import ConfigError


def try_lock(directory: Path, name: str, shared: bool = False) -> tuple[int, bool]:
    """(descriptor of `directory/name`, whether the lock was taken), creating both if missing.
    Not taken: another holder has it, and the descriptor is the caller's to read and close.
    OSError for a directory or file that cannot be made or locked."""
    made_directories(directory)  # a sink's or export's files are only as durable as it
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return fd, False
    except OSError:
        os.close(fd)
        raise
    return fd, True


@contextlib.contextmanager
def writer_lock(directory: Path, name: str, writer: str) -> Iterator[None]:
    """Hold `directory/name` while one `writer` (an export, a sink) writes the directory;
    ConfigError, one line, if another holds it or the directory cannot be made."""
    try:
        fd, taken = try_lock(directory, name)
    except OSError as e:
        if directory.exists() and not directory.is_dir():
            raise ConfigError(f"{directory} is a file, not a directory: name a directory") from None
        raise ConfigError(f"cannot create {directory}: {e.strerror or e}") from None
    try:
        if not taken:
            raise ConfigError(f"another {writer} is writing to {directory}")
        yield
    finally:
        os.close(fd)
