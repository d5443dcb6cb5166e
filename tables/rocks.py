"""RocksDB (rocksdict) implementation of `KeyValueStore`: one database per partition."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch


class StateLockedError(RuntimeError):
    """Another process already holds this state directory."""


class RocksStore:
    """A raw-bytes rocksdict database; writes go through one WriteBatch per commit."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.path = path
        try:
            self.db = Rdict(str(path), opts)
        except Exception as e:  # rocksdict raises bare Exception for IO/lock errors
            msg = str(e)
            if "lock" in msg.lower():
                raise StateLockedError(
                    f"state directory {path} is in use by another worker process "
                    "(give each worker its own KAPPA_STATE_DIR)"
                ) from None
            raise RuntimeError(
                f"cannot open state at {path}: {msg.splitlines()[0]} — move that directory "
                "away and restart the worker to rebuild the partition from its source"
            ) from None

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []
        return self.db.get(list(keys))  # type: ignore[no-any-return]

    def scan(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        for k, v in self.db.items(from_key=start):
            if k >= stop:
                break
            yield k, v

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        wb = WriteBatch(raw_mode=True)
        for k, v in changes.items():
            if v is None:
                wb.delete(k)
            else:
                wb.put(k, v)
        self.db.write(wb)

    def close(self) -> None:
        self.db.close()
