"""RocksDB (rocksdict) implementation of `KeyValueStore`: one database per partition.

Each database directory may carry a small `KAPPA` marker (JSON) naming what it holds (app id,
version, pipeline, partition), written when a store opened with an `identity` creates or
adopts the directory; a directory whose marker names another app id, pipeline or partition is
refused instead of being read as if it were this partition's state.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from rocksdict import BlockBasedOptions, Cache, Options, Rdict, WriteBatch, WriteBufferManager

# Defined with the state it describes (the core, which imports no rocksdict), raised here too.
from tables.partition_state import StateError as StateError

MARKER = "KAPPA"
# Marker fields that must match for a directory to be this partition's state. The version is
# recorded but not compared: a version's state may be seeded from another version's. A field
# a marker lacks (written before it was recorded) is not compared.
IDENTITY_FIELDS = ("app_id", "topic_prefix", "pipeline", "partition")
# Files RocksDB (or rocksdict) may leave in a directory before it holds a database at all.
_PRE_DB_FILES = ("LOCK", "LOG", MARKER, MARKER + ".tmp")
_REBUILD = "the partition is rebuilt from its source"


class StateLockedError(StateError):
    """Another process (or another open store in this one) already holds this state."""


class StateUnreadableError(StateError):
    """The directory is not a readable RocksDB database (corrupt, or not RocksDB at all)."""


class StateIOError(StateError):
    """Reading or writing an open store failed (I/O error, corruption): no record's fault."""


class ForeignStateError(StateError):
    """The directory's marker says it holds another app's, pipeline's or partition's state."""


def unreadable(path: Path, reason: str) -> StateUnreadableError:
    return StateUnreadableError(
        lambda rerun: (
            f"state at {path} is unreadable ({reason}): remove it with "
            f"`rm -rf {path}` and {rerun or 'restart'}; {_REBUILD}"
        )
    )


def read_marker(path: Path) -> dict[str, Any] | None:
    """The marker of a partition directory (None when there is none); raises if unreadable."""
    marker = path / MARKER
    try:
        raw = marker.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        raise unreadable(path, f"cannot read {MARKER}: {e.strerror}") from None
    try:
        found = json.loads(raw)
    except ValueError:
        found = None
    if not isinstance(found, dict):
        raise unreadable(path, f"{MARKER} is not a JSON object")
    return found


def write_marker(path: Path, identity: Mapping[str, Any]) -> None:
    """Write the marker atomically (a crash leaves the old marker or none, never half of one)."""
    tmp = path / (MARKER + ".tmp")
    tmp.write_text(json.dumps(dict(identity), sort_keys=True) + "\n")
    os.replace(tmp, path / MARKER)


# Memory stays bounded however many keys or partitions a process holds: small write buffers
# per database, one bound on the memtables of all of them (a worker holds a database per
# pipeline and partition: 16 × 2 × 8 MB otherwise), and one block cache shared by all of them
# (RocksDB defaults: 64 MB buffers per database, a cache per database). The shared bound makes
# the database being written flush once all memtables reach ~90% of it; it never stalls writes.
WRITE_BUFFER_BYTES = 8 * 1024 * 1024
SHARED_WRITE_BUFFERS = WriteBufferManager(32 * 1024 * 1024, False)  # (bytes, allow_stall)
SHARED_BLOCK_CACHE = Cache(64 * 1024 * 1024)


def store_options() -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_write_buffer_size(WRITE_BUFFER_BYTES)
    opts.set_max_write_buffer_number(2)
    opts.set_write_buffer_manager(SHARED_WRITE_BUFFERS)
    table = BlockBasedOptions()
    table.set_block_cache(SHARED_BLOCK_CACHE)
    opts.set_block_based_table_factory(table)
    return opts


class RocksStore:
    """A raw-bytes rocksdict database; writes go through one WriteBatch per commit.

    `identity` (e.g. {"app_id", "version", "pipeline", "partition"}) is checked against the
    directory's marker before opening, and written as the marker if there is none yet.
    """

    def __init__(self, path: Path, identity: Mapping[str, Any] | None = None) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StateError(f"cannot create state directory {path.parent}: {e}") from None
        self.path = path
        if identity is not None:
            self._check_identity(identity)
        self._check_is_database()
        opts = store_options()
        try:
            self.db = Rdict(str(path), opts)
        except Exception as e:  # rocksdict raises bare Exception for IO/lock/corruption errors
            msg = str(e)
            # RocksDB names its LOCK file; don't match "block" (as in "block checksum mismatch").
            if "/LOCK" in msg or "lock hold" in msg or "lock file" in msg.lower():
                raise StateLockedError(
                    f"state directory {path} is in use by another Kappa process: a worker (give "
                    "each worker its own KAPPA_STATE_DIR), or a replay of the same partitions "
                    "of this version (wait for it to end)"
                ) from None
            first = msg.splitlines()[0] if msg else type(e).__name__
            raise unreadable(path, first.strip()) from None
        if identity is not None and not (path / MARKER).exists():
            try:
                write_marker(path, identity)
            except OSError as e:
                self.db.close()
                raise unreadable(path, f"cannot write {MARKER}: {e.strerror}") from None

    def _check_identity(self, identity: Mapping[str, Any]) -> None:
        found = read_marker(self.path)
        if found is None:
            return
        differ = [
            k for k in IDENTITY_FIELDS if k in identity and k in found and found[k] != identity[k]
        ]
        if differ:
            theirs = ", ".join(f"{k}={found[k]!r}" for k in IDENTITY_FIELDS if k in found)
            ours = ", ".join(f"{k}={identity[k]!r}" for k in IDENTITY_FIELDS if k in identity)
            path = self.path
            raise ForeignStateError(
                lambda rerun: (
                    f"state at {path} belongs to {theirs}, not {ours}: check "
                    "KAPPA_STATE_DIR, KAPPA_APP_ID and KAPPA_TOPIC_PREFIX, or remove it with "
                    f"`rm -rf {path}` and {rerun or 'restart'}; {_REBUILD}"
                )
            )

    def _check_is_database(self) -> None:
        """Refuse a non-empty directory that holds no database: RocksDB would create one among
        the foreign files and the worker would start from empty state without a word."""
        if not self.path.is_dir() or (self.path / "CURRENT").exists():
            return
        try:
            names = [p.name for p in self.path.iterdir()]
        except OSError as e:
            raise unreadable(self.path, e.strerror or type(e).__name__) from None
        foreign = sorted(n for n in names if not n.startswith(_PRE_DB_FILES))
        if foreign:
            shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
            raise unreadable(self.path, f"not a RocksDB database: no CURRENT file, found {shown}")

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """One point read per key, not rocksdict's multi-get: the multi-get releases the GIL,
        and getting it back waits out the switch interval (5 ms) whenever another thread runs
        Python, as faust's consumer thread does in a worker. Point reads keep the GIL and
        cost the same (~1 us per key)."""
        get = self.db.get
        with self._io_errors():
            return [get(k) for k in keys]

    def scan(self, start: bytes = b"", stop: bytes | None = None) -> Iterator[tuple[bytes, bytes]]:
        """Entries with start <= key < stop (to the end if stop is None), in key order."""
        with self._io_errors():
            for k, v in self.db.items(from_key=start):
                if stop is not None and k >= stop:
                    break
                yield k, v

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        wb = WriteBatch(raw_mode=True)
        for k, v in changes.items():
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        with self._io_errors():
            self.db.write(wb)

    @contextlib.contextmanager
    def _io_errors(self) -> Iterator[None]:
        """rocksdict raises a bare `Exception` for I/O and corruption errors: they become a
        `StateIOError`, no record's fault, so the worker stops (a pipeline error would send
        the record to the DLQ). Other exceptions pass unchanged."""
        try:
            yield
        except Exception as e:
            if type(e) is not Exception:
                raise
            first = str(e).splitlines()[0] if str(e) else "I/O error"
            path = self.path

            def advice(rerun: str | None) -> str:
                # a worker may still be running; a command given `rerun` has stopped
                stop = "" if rerun else "stop the worker, "
                return (
                    f"state at {path} failed: {first}: {stop}remove it with `rm -rf {path}` "
                    f"and {rerun or 'restart'}; {_REBUILD}"
                )

            raise StateIOError(advice) from e

    def close(self) -> None:
        self.db.close()
