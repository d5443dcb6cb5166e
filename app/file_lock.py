"""Non-blocking flock on a lock file in a directory: how Kappa keeps two processes from the
same state directory, or two exports from the same output directory.

flock locks belong to the open file description, so a second lock of the same file fails
even from the same process; closing the descriptor releases it, as does the process exiting.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path


def try_lock(directory: Path, name: str, shared: bool = False) -> tuple[int, bool]:
    """(descriptor of `directory/name`, whether the lock was taken), creating both if missing.
    Not taken: another holder has it, and the descriptor is the caller's to read and close.
    OSError for a directory or file that cannot be made or locked."""
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, (fcntl.LOCK_SH if shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
    except BlockingIOError:
        return fd, False
    except OSError:
        os.close(fd)
        raise
    return fd, True
