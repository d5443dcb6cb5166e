"""State of one pipeline on one source partition, staged per batch and committed atomically.

Layers, as in Kafka Streams' stores: the pipeline reads and stages writes here; `prepare()`
coalesces them (one write per key per batch) into the entries the changelog topic receives,
and `commit()` writes the same entries to the backing `KeyValueStore` in one atomic batch
together with the source offset they reflect. Because the applied offset travels in the same
atomic write as the state, a restart skips exactly the records already applied: no double
counting.

A state started from nothing writes a random *origin* as the first entry of its first batch, so
it is the first record of its changelog: a local copy names the changelog it came from, and a
restore may resume from where the copy left off only on that same log (not on one rebuilt after
the broker lost its data, whose batches may end at the same offsets).

Between the two, a batch may be *held*: its outputs are acknowledged but its changelog entries
are not yet, so it must not reach the store (local state is never ahead of the changelog), yet
the next batch must read it. Reads look at the staged batch, then the held one, then the store.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn, Protocol, Self

from tables.aggregates import Moments
from tables.stream_time import StreamTime
from tables.window_processor import WindowKey

_BIAS = 1 << 63
_U64 = struct.Struct(">Q")
_U64X2 = struct.Struct(">QQ")
_I64 = struct.Struct(">q")

WINDOW_PREFIX = b"W"
KV_PREFIX = b"K"
META_PREFIX = b"M"
APPLIED_OFFSET = META_PREFIX + b"applied-offset"
ORIGIN = META_PREFIX + b"origin"
ORIGIN_BYTES = 16
_SHOWN_KEY_CHARS = 120  # of a key named in an error line


class StateError(RuntimeError):
    """Local state a worker (or replay) cannot use; the message is one line and says what to do.

    When what to do ends in starting again (once the state is removed), `message` may be a
    function of how: given None it says it in a worker's words ("... and restart"), given a
    phrase (`with_rerun`) in another command's ("... and run the replay again").
    """

    def __init__(self, message: str | Callable[[str | None], str]) -> None:
        self._advice = None if isinstance(message, str) else message
        super().__init__(message if isinstance(message, str) else message(None))

    def with_rerun(self, rerun: str) -> Self:
        """The same error for a command that goes on by `rerun` (`kappa replay`: "run the
        replay again"); unchanged if its advice is not to start again."""
        if self._advice is None:
            return self
        again = type(self).__new__(type(self))
        again.__dict__.update(self.__dict__)
        again.args = (self._advice(rerun),)
        return again


class UndecodableStateError(StateError):
    """A key or value in a pipeline's own state that Kappa cannot decode. No input record's
    fault: the same input replayed into fresh state would not meet it, so the worker (or
    replay) stops rather than dead-letter the records that read it, whose outputs a replay
    would then not match. `what` names it and the cause."""

    def __init__(self, what: str, directory: Path | None) -> None:
        command = f" (`rm -rf {directory}`)" if directory is not None else ""

        def advice(rerun: str | None) -> str:
            return (
                f"{what}: remove the partition's state directory{command} and "
                f"{rerun or 'restart the worker'}: it is restored from its changelog; if the "
                "changelog holds it too, run the Kappa release that wrote it, or replay into a "
                "new version"
            )

        super().__init__(advice)
        self.what = what
        self.directory = directory


class KeyValueStore(Protocol):
    """Ordered bytes → bytes storage with atomic multi-key writes (RocksDB, or a dict)."""

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    def scan(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Items with start <= key < stop, in key order."""
        ...

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        """Apply all puts (value) and deletes (None) atomically."""
        ...

    def close(self) -> None:
        """Release the store (a RocksDB directory's lock); it is not used again."""
        ...


def encode_window_key(store: str, key: WindowKey) -> bytes:
    end, start, name = key
    return (
        WINDOW_PREFIX
        + store.encode()
        + b"\0"
        + _U64X2.pack(end + _BIAS, start + _BIAS)
        + name.encode()
    )


def decode_window_key(raw: bytes, prefix_len: int) -> WindowKey:
    end, start = _U64X2.unpack_from(raw, prefix_len)
    return (end - _BIAS, start - _BIAS, raw[prefix_len + 16 :].decode())


def _quoted(key: str | bytes) -> str:
    """A key as an error line names it: quoted and escaped (one line), cut if long."""
    if len(key) <= _SHOWN_KEY_CHARS:
        return repr(key)
    cut = key[:_SHOWN_KEY_CHARS]
    return repr(cut + "…") if isinstance(cut, str) else repr(cut) + "…"


class PartitionState:
    """Staged view over one partition's store; see the module docstring."""

    def __init__(
        self,
        store: KeyValueStore,
        partition: int,
        new_origin: Callable[[], bytes] = lambda: os.urandom(ORIGIN_BYTES),
        pipeline: str = "pipeline",
        directory: Path | None = None,
    ) -> None:
        self.store = store
        self.partition = partition
        self.pipeline = pipeline  # and `directory` (where the store is): named in errors
        self.directory = directory
        self.new_origin = new_origin  # the origin of a state started from nothing
        self._drawn_origin: bytes | None = None  # kept: a retried first batch may have landed
        self._staged: dict[bytes, bytes | None] = {}
        # The held batch (see the module docstring): its prepared entries, in changelog order.
        self._held: dict[bytes, bytes | None] = {}
        self._clocks: dict[str, StreamTime] = {}
        # Per window store: every window ending below this has closed and been deleted, so scans
        # for closable windows start here instead of stepping over the tombstones of all the
        # windows closed before (RocksDB iterators pay for every tombstone they pass).
        self._scan_floor: dict[str, int] = {}
        self._pending_floor: dict[str, int] = {}
        applied = store.get_many([APPLIED_OFFSET])[0]
        try:
            self.applied_offset: int = _I64.unpack(applied)[0] if applied is not None else -1
        except struct.error as e:  # damaged on disk: see `raise_undecodable`
            key = APPLIED_OFFSET[len(META_PREFIX) :].decode()
            self.raise_undecodable("meta", [(key, applied)], _I64.unpack, e)

    def raise_undecodable(
        self,
        table: str,
        entries: Iterable[tuple[Any, bytes | None]],
        decode: Callable[[bytes], Any],
        error: Exception,
        show_key: Callable[[Any], str] | None = None,
    ) -> NoReturn:
        """For `error`, met decoding stored entries of `table`: raise an `UndecodableStateError`
        naming the first of `entries` (key, value; None: no value to check) whose value
        `decode` refuses, or whose key `show_key` refuses: given for keys read back from the
        store, it decodes one into the key the line names. If none is refused, `error` itself
        (it was no decoding error). Called only once decoding failed: pipelines decode without
        checking first, so the check costs a batch nothing."""
        if isinstance(error, MemoryError):  # no entry's fault: it stops the worker as such
            raise error
        for key, raw in entries:
            try:
                shown = key if show_key is None else show_key(key)
            except MemoryError:
                raise
            except Exception as e:
                raise self._undecodable(f"the stored {table} key {_quoted(key)}", e) from e
            if raw is None:
                continue
            try:
                decode(raw)
            except MemoryError:
                raise
            except Exception as e:
                what = f"the stored {table} value of key {_quoted(shown)}"
                raise self._undecodable(what, e) from e
        raise error

    def _undecodable(self, what: str, cause: Exception) -> UndecodableStateError:
        """The one line for `what` (a stored key or value) that decoding refused with `cause`."""
        first = (str(cause).splitlines() or [""])[0][:200]
        kind = type(cause).__name__
        if kind == "error":  # struct.error, binascii.error: named with their module
            kind = f"{type(cause).__module__}.error"
        reason = f"{kind}: {first}" if first else kind
        where = f"{self.pipeline} partition {self.partition}"
        return UndecodableStateError(
            f"{where}: {what} cannot be decoded ({reason})", self.directory
        )

    # -- windows ---------------------------------------------------------------------------
    def windows(self, store_name: str) -> WindowStore:
        return WindowStore(self, store_name)

    def clock(self, name: str, grace_ms: int) -> StreamTime:
        """The stream time named `name` (one per window store), loaded once and kept."""
        clock = self._clocks.get(name)
        if clock is None:
            key = f"stream-time:{name}"
            raw = self.get_meta(key)
            try:
                clock = StreamTime(grace_ms, _I64.unpack(raw)[0] if raw is not None else None)
            except struct.error as e:
                self.raise_undecodable("meta", [(key, raw)], _I64.unpack, e)
            self._clocks[name] = clock
        return clock

    def stream_time_ms(self) -> int | None:
        """The largest event time any of this partition's clocks has seen (None: none yet)."""
        seen = [c.max_event_ms for c in self._clocks.values() if c.max_event_ms is not None]
        return max(seen, default=None)

    # -- key/value tables --------------------------------------------------------------------
    def get_values(self, table: str, keys: Sequence[str]) -> list[bytes | None]:
        prefix = KV_PREFIX + table.encode() + b"\0"
        return self.get_raw([prefix + k.encode() for k in keys])

    def get_raw(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values of encoded keys as the pipeline sees them: staged, else held, else stored."""
        staged, held = self._staged, self._held
        if not staged and not held:
            return self.store.get_many(keys)
        if not held:
            found = iter(self.store.get_many([k for k in keys if k not in staged]))
            return [staged[k] if k in staged else next(found) for k in keys]
        found = iter(self.store.get_many([k for k in keys if k not in staged and k not in held]))
        return [staged[k] if k in staged else held[k] if k in held else next(found) for k in keys]

    def settled_values(self, table: str, keys: Sequence[str]) -> list[bytes | None]:
        """Values as of the last batch whose outputs were acknowledged (held, else stored):
        what readers outside the pipeline see, never a batch in progress, which a failed
        send would discard."""
        prefix = KV_PREFIX + table.encode() + b"\0"
        raw = [prefix + k.encode() for k in keys]
        held = self._held
        found = iter(self.store.get_many([k for k in raw if k not in held]))
        return [held[k] if k in held else next(found) for k in raw]

    def scan_values(self, table: str, start: str, stop: str) -> list[tuple[str, bytes]]:
        """Entries of `table` with start <= key < stop, in key order, as the pipeline sees them
        (staged, else held, else stored)."""
        prefix = KV_PREFIX + table.encode() + b"\0"
        low, high = prefix + start.encode(), prefix + stop.encode()
        found = dict(self.store.scan(low, high))
        for overlay in (self._held, self._staged):
            for k, v in overlay.items():
                if low <= k < high:
                    if v is None:
                        found.pop(k, None)
                    else:
                        found[k] = v
        n = len(prefix)
        entries = sorted(found.items())
        try:
            return [(k[n:].decode(), v) for k, v in entries]
        except Exception as e:  # a key no release wrote (not UTF-8): see `raise_undecodable`
            keys = ((k[n:], None) for k, _ in entries)
            self.raise_undecodable(table, keys, bytes, e, bytes.decode)

    def put_value(self, table: str, key: str, value: bytes | None) -> None:
        self._staged[KV_PREFIX + table.encode() + b"\0" + key.encode()] = value

    # -- metadata ----------------------------------------------------------------------------
    def get_meta(self, name: str) -> bytes | None:
        return self.get_raw([META_PREFIX + name.encode()])[0]

    def origin(self) -> bytes | None:
        """The origin of this state's changelog (None: a state written before origins, or
        nothing applied yet)."""
        return self.get_raw([ORIGIN])[0]

    # -- commit ------------------------------------------------------------------------------
    def stage(self, key: bytes, value: bytes | None) -> None:
        self._staged[key] = value

    def prepare(self, applied_offset: int) -> list[tuple[bytes, bytes | None]]:
        """Stage the clocks and `applied_offset`; return every staged entry, each key once
        (what the changelog must receive before `commit`)."""
        for name, clock in self._clocks.items():
            if clock.max_event_ms is not None:
                self._staged[META_PREFIX + f"stream-time:{name}".encode()] = _I64.pack(
                    clock.max_event_ms
                )
        if self.applied_offset < 0 and self.origin() is None:  # first, in a log's first batch
            if self._drawn_origin is None:
                self._drawn_origin = self.new_origin()
            self._staged = {ORIGIN: self._drawn_origin, **self._staged}
        self._staged.pop(APPLIED_OFFSET, None)
        # Last, always: in the changelog the applied offset closes each batch's entries.
        self._staged[APPLIED_OFFSET] = _I64.pack(max(applied_offset, self.applied_offset))
        return list(self._staged.items())

    def staged_bytes(self) -> int:
        """Approximate size of the staged entries as changelog records."""
        return sum(len(k) + len(v or b"") + 16 for k, v in self._staged.items())

    def commit(self) -> None:
        """Write the held batch, then everything staged, in one atomic batch."""
        held, staged = self._held, self._staged
        changes = {**held, **staged} if held and staged else held or staged
        if changes:
            self.store.write(changes)  # if it fails the held batch stays held
            self._note_applied(changes)
        self._held, self._staged = {}, {}
        self._scan_floor.update(self._pending_floor)
        self._pending_floor = {}

    def hold(self) -> None:
        """Keep the prepared batch out of the store until its changelog entries are
        acknowledged (`commit_held`); later batches read it. One batch is held at a time."""
        if self._held:
            raise RuntimeError("a held batch must be committed before the next one is held")
        self._held, self._staged = self._staged, {}
        self._scan_floor.update(self._pending_floor)  # its deletions are seen through _held
        self._pending_floor = {}
        self._note_applied(self._held)

    def held(self) -> Mapping[bytes, bytes | None]:
        """The held batch: its changelog entries, in the order `prepare` returned them
        (empty: none held). Not to be changed."""
        return self._held

    def commit_held(self, held: Mapping[bytes, bytes | None] | None = None) -> None:
        """Its changelog entries are acknowledged: write the held batch to the store. With
        `held`, only if that is still the batch held (not committed and replaced since)."""
        if held is not None and held is not self._held:
            return
        if self._held:
            self.store.write(dict(self._held))  # if it fails the batch stays held
        self._held = {}

    def _note_applied(self, changes: dict[bytes, bytes | None]) -> None:
        applied = changes.get(APPLIED_OFFSET)
        if applied is not None:
            self.applied_offset = _I64.unpack(applied)[0]

    def discard(self) -> None:
        """Drop staged changes (the batch failed before its outputs were acknowledged). A
        held batch stays: its outputs were acknowledged."""
        self._staged = {}
        self._pending_floor = {}
        self._clocks = {}  # reloaded (held, else stored): the batch's clock advance is undone


def _shown_window(key: WindowKey) -> str:
    """A window key as an error names it: `key [start, end)`, epoch ms."""
    end, start, name = key
    return f"{name} [{start}, {end})"


def _shown_stored(raw: bytes) -> str:
    """A window key read back from its store (its prefix cut) as an error names it."""
    return _shown_window(decode_window_key(raw, 0))


class WindowStore:
    """One window store inside a `PartitionState`; implements the core's `WindowState`."""

    def __init__(self, state: PartitionState, name: str) -> None:
        self.state = state
        self.name = name
        self._prefix = WINDOW_PREFIX + name.encode() + b"\0"

    def get_many(self, keys: Sequence[WindowKey]) -> list[Moments | None]:
        raw = self.state.get_raw([encode_window_key(self.name, k) for k in keys])
        try:
            return [Moments.from_bytes(r) if r is not None else None for r in raw]
        except Exception as e:
            shown = (_shown_window(k) for k in keys)
            self.state.raise_undecodable(self.name, zip(shown, raw), Moments.from_bytes, e)

    def expiring(self, watermark: int) -> Iterable[tuple[WindowKey, Moments]]:
        """Stored (and held) windows ending at or before `watermark`; what the current batch
        staged is the caller's to add (`updated`)."""
        stop_end = min(watermark + 1, _BIAS - 1) + _BIAS
        floor = self.state._scan_floor.get(self.name)
        start = self._prefix if floor is None else self._prefix + _U64.pack(floor + _BIAS)
        stop = self._prefix + _U64.pack(stop_end)
        if isinstance(watermark, int):  # not for a flush (+inf), which deletes nothing
            self.state._pending_floor[self.name] = watermark + 1
        n = len(self._prefix)
        try:
            return [
                (decode_window_key(k, n), Moments.from_bytes(v)) for k, v in self._scan(start, stop)
            ]
        except StateError:  # the store's own (an I/O error): not an entry's
            raise
        except Exception as e:
            found = ((k[n:], v) for k, v in self._scan(start, stop))
            self.state.raise_undecodable(self.name, found, Moments.from_bytes, e, _shown_stored)

    def _scan(self, start: bytes, stop: bytes) -> Iterable[tuple[bytes, bytes]]:
        """Stored windows with start <= key < stop, the held batch's over them."""
        held = self.state._held
        scanned = self.state.store.scan(start, stop)
        if held:  # the held batch's windows replace (or delete) the stored ones
            overlay = {k: v for k, v in held.items() if start <= k < stop}
            if overlay:
                merged = {k: v for k, v in scanned if k not in overlay}
                merged.update((k, v) for k, v in overlay.items() if v is not None)
                return sorted(merged.items())
        return scanned

    def put(self, updated: dict[WindowKey, Moments]) -> None:
        stage = self.state.stage
        for k, m in updated.items():
            stage(encode_window_key(self.name, k), m.to_bytes())

    def delete(self, keys: Iterable[WindowKey]) -> None:
        stage = self.state.stage
        for k in keys:
            stage(encode_window_key(self.name, k), None)


class MemoryStore:
    """Dict-backed `KeyValueStore` for tests."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        return [self.data.get(k) for k in keys]

    def scan(self, start: bytes, stop: bytes) -> Iterator[tuple[bytes, bytes]]:
        for k in sorted(k for k in self.data if start <= k < stop):
            yield k, self.data[k]

    def write(self, changes: dict[bytes, bytes | None]) -> None:
        for k, v in changes.items():
            if v is None:
                self.data.pop(k, None)
            else:
                self.data[k] = v

    def close(self) -> None:
        pass
