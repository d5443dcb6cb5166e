"""Files that appear whole or not at all: written under a hidden temporary name beside their
destination, flushed to disk, then renamed into place. How `kappa export` replaces its files
and how `kappa sink` finishes its own.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


class AtomicFile:
    """A file being written under a hidden temporary name in `directory`; `commit` renames it
    to its destination, `discard` removes it. Until then no reader sees any of it."""

    def __init__(self, directory: Path, name: str) -> None:
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{name}.", suffix=".tmp")
        self.temporary = Path(tmp)
        self.file: BinaryIO = os.fdopen(fd, "wb")
        try:
            os.fchmod(fd, 0o666 & ~_umask())  # as open() would: mkstemp's is 0600
        except BaseException:
            self.discard()
            raise

    def commit(self, path: Path, sync_directory: bool = False) -> None:
        """Flush to disk and rename to `path` (then sync the directory: the rename too)."""
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()
        os.replace(self.temporary, path)
        if sync_directory:
            synced_directory(path.parent)

    def discard(self) -> None:
        """Remove the temporary file; never raises for a file already gone or closed."""
        with contextlib.suppress(OSError):
            self.file.close()
        self.temporary.unlink(missing_ok=True)


@contextlib.contextmanager
def replaced(path: Path) -> Iterator[BinaryIO]:
    """A file object whose content replaces `path` atomically when the block ends; on any
    error (Ctrl-C included) `path` is left as it was and nothing else remains."""
    f = AtomicFile(path.parent, path.name)
    try:
        yield f.file
        f.commit(path)
    except BaseException:
        f.discard()
        raise


def made_directories(directory: Path) -> None:
    """`mkdir -p`, with the parent of each directory made fsynced, so that the whole new path
    survives a crash (a file renamed into a directory whose own entry was lost is lost too)."""
    missing = []
    at = directory
    while not at.is_dir():
        missing.append(at)
        if at.parent == at:
            break
        at = at.parent
    directory.mkdir(parents=True, exist_ok=True)
    for made in reversed(missing):
        synced_directory(made.parent)


def synced_directory(directory: Path) -> None:
    """fsync a directory, so the renames and removals in it survive a crash."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
