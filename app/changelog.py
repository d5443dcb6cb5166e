"""Changelog topics as a `ChangelogSource`: how a partition's state is restored elsewhere.

Each processing batch writes its changelog entries as one record batch (appended atomically
by the broker) whose last entry is the applied source offset; the changes of one record too
big for a record batch go out as several, in order, the applied offset last. So the newest
record of a changelog partition is that offset unless a worker died between those record
batches, and replaying the partition from the start (or its compacted form) up to the last
applied offset rebuilds exactly the state of the last complete batch.

A local copy that is only behind (its partition was processed elsewhere for a while) resumes
instead: the entries after its own batch's applied offset, on the log its origin names (the
first record of the partition), rebuild the same state, as Kafka Streams restores from a
checkpoint. Compaction keeps that correct (a record dropped from the tail has a newer one there)
as long as no tombstone was dropped from the tail: the broker drops one `delete.retention.ms`
after writing it at the earliest, so a copy resumes only on a tail younger than half of that.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import time
from collections.abc import AsyncGenerator, Callable, Sequence

from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from app.admin import topic_configs
from app.kafka_clients import Conn
from app.topic_reader import high_watermarks, read_range
from tables.partition_state import APPLIED_OFFSET, ORIGIN, StateError

log = logging.getLogger(__name__)

_I64 = struct.Struct(">q")
ENDS_TTL_S = 2.0
# The backward search for the newest applied offset: two records first (the marker, or the
# marker and a transaction's commit record), then windows 64 times wider.
FIRST_WINDOW = 2
WINDOW_GROWTH = 64
# The backward search for a local copy's own batch: windows twice as wide each step, so no more
# than about twice the entries to apply are read to find where they start.
RESUME_FIRST_WINDOW = 64
RESUME_WINDOW_GROWTH = 2
# Kafka's default `delete.retention.ms` (a day), for a broker that does not report the topic's.
DEFAULT_DELETE_RETENTION_MS = 86_400_000


def marker_value(record: ConsumerRecord, where: str) -> int:
    """The source offset a marker record (key `APPLIED_OFFSET`, a value) says was applied.
    Anyone with access to the topic can write one: a value that is no 8-byte offset stops the
    worker or replay in one line (`where`: the changelog partition) instead of a traceback."""
    try:
        return int(_I64.unpack(record.value)[0])
    except struct.error:
        raise StateError(
            f"{where} offset {record.offset}: the applied offset there cannot be decoded "
            "(not 8 bytes long): only Kappa may write to a changelog topic; "
            "replay into a new version"
        ) from None


def _keyless(where: str, chunk: Sequence[ConsumerRecord]) -> StateError:
    """A changelog record with no key names no state key: only something other than Kappa
    writes one (Apache Kafka refuses it on a compacted topic)."""
    offset = next(r.offset for r in chunk if r.key is None)
    return StateError(
        f"{where} offset {offset}: a record without a key: only Kappa may write to a "
        "changelog topic; replay into a new version"
    )


class OwnMarkerSearch:
    """Finds where a local copy's own last batch ends, from windows of the changelog read
    newest first (each window oldest first). Its marker must be the only one of its applied
    offset (a flush repeats the last batch's, so the copy could be either), and the search
    ends at the marker before it, or where every record is older than `cutoff_ms` (ms, record
    timestamps) with no marker found: a tail that old is not resumed on anyway."""

    def __init__(self, applied: int, cutoff_ms: float, where: str = "the changelog") -> None:
        self.applied = applied
        self.where = where  # the changelog partition, for errors
        self.cutoff_ms = cutoff_ms
        self.hits: list[int] = []  # the offset after each marker of `applied`
        self.done = False
        self._below = False  # a marker of an earlier batch: nothing older matters
        self._newest_ms: int | None = None  # the window's newest record's timestamp

    def read(self, records: Sequence[ConsumerRecord]) -> None:
        for r in records:
            if r.key == APPLIED_OFFSET and r.value is not None:
                value = marker_value(r, self.where)
                if value == self.applied:
                    self.hits.append(r.offset + 1)
                elif value < self.applied:
                    self._below = True
        if records:
            self._newest_ms = records[-1].timestamp

    def window_read(self) -> None:
        old = self._newest_ms is not None and self._newest_ms < self.cutoff_ms
        self.done = self._below or (old and not self.hits)
        self._newest_ms = None

    def found(self, log_start_read: bool) -> int | None:
        """The offset after the copy's marker, or None (not found, or not the only one)."""
        sure = self._below or log_start_read
        return self.hits[0] if sure and len(self.hits) == 1 else None


class KafkaChangelog:
    def __init__(
        self, bootstrap: Conn, topic: str, now_ms: Callable[[], float] = lambda: time.time() * 1e3
    ) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.now_ms = now_ms  # wall clock (ms), against the tail's record timestamps
        self._ends: dict[int, int] = {}
        self._ends_at = -1e9
        # Where the complete batches end, when entries follow the last applied offset.
        self._complete_end: dict[int, int] = {}

    async def _end(self, partition: int, fresh: bool = False) -> int:
        """The partition's high watermark; one fetch serves the partitions opened together
        (after an assignment), a later open fetches again."""
        now = time.monotonic()
        if fresh or now - self._ends_at > ENDS_TTL_S or partition not in self._ends:
            self._ends = await high_watermarks(self.bootstrap, self.topic)
            self._ends_at = now
        return self._ends.get(partition, 0)

    async def last_applied(self, partition: int, fresh: bool = False) -> int:
        """The source offset of the newest complete batch (-1 if none), found by reading
        backwards from the end in growing windows: usually the last record (or the one before a
        transaction marker, under `exactly_once`), and never the whole partition when only a
        dead writer's partial batch follows it."""
        end = await self._end(partition, fresh)
        self._complete_end.pop(partition, None)
        stop = end
        window = FIRST_WINDOW
        while stop > 0:
            start = max(0, stop - window)
            found = await self._last_marker(partition, start, stop)
            if found is not None:
                applied, complete = found
                if complete < end:
                    self._complete_end[partition] = complete
                return applied
            stop, window = start, window * WINDOW_GROWTH
        # No applied offset at all (an empty partition, or one written by an older version).
        self._complete_end[partition] = 0
        return -1

    async def _last_marker(self, partition: int, start: int, stop: int) -> tuple[int, int] | None:
        """(applied offset, the offset after it) of the newest marker in [start, stop)."""
        found = None
        async with self._read(partition, start, stop) as chunks:
            async for chunk in chunks:
                for r in chunk:
                    if r.key == APPLIED_OFFSET and r.value is not None:
                        found = (marker_value(r, f"{self.topic}[{partition}]"), r.offset + 1)
        return found

    async def resume_point(self, partition: int, applied: int, origin: bytes) -> int | None:
        """The offset just after the marker of the batch that applied `applied`, if this log
        starts with `origin` and its tail since is whole (call `last_applied` first); None:
        restore the whole log, and say why."""
        end = await self._complete(partition)
        first = await self._first_records(partition, 0, end)
        if not first or first[0].offset != 0 or (first[0].key, first[0].value) != (ORIGIN, origin):
            return self._whole(partition, "the changelog is not the one it came from")
        keep_ms = await self._tombstones_kept_ms()
        if keep_ms is None:
            return self._whole(partition, "the changelog's delete.retention.ms is unknown")
        cutoff_ms = self.now_ms() - keep_ms / 2
        search = OwnMarkerSearch(applied, cutoff_ms, where=f"{self.topic}[{partition}]")
        stop, window = end, RESUME_FIRST_WINDOW
        while stop > 1 and not search.done:
            start = max(1, stop - window)
            async with self._read(partition, start, stop) as chunks:
                async for chunk in chunks:
                    search.read(chunk)
            search.window_read()
            stop, window = start, window * RESUME_WINDOW_GROWTH
        after = search.found(log_start_read=stop <= 1)
        if after is None:
            why = "repeated by a flush" if len(search.hits) > 1 else "not found, or too old"
            return self._whole(partition, f"the marker of its last batch ({applied}) is {why}")
        tail = await self._first_records(partition, after, end)
        if tail and tail[0].timestamp < search.cutoff_ms:
            return self._whole(partition, "what it misses is older than half delete.retention.ms")
        return after

    def _whole(self, partition: int, why: str) -> None:
        log.warning("%s[%d]: the local copy cannot catch up: %s", self.topic, partition, why)
        return None

    async def _first_records(self, partition: int, start: int, end: int) -> list[ConsumerRecord]:
        """The first records at or after `start` (before `end`): one fetch's worth, or none."""
        async with self._read(partition, start, end, chunk=1) as chunks:
            return await anext(chunks, [])

    def _read(
        self, partition: int, start: int, stop: int, chunk: int = 20_000
    ) -> contextlib.aclosing[AsyncGenerator[list[ConsumerRecord], None]]:
        """The partition's records in [start, stop), in chunks; its consumer stops on leaving,
        also when the reading failed or was cancelled midway."""
        return contextlib.aclosing(
            read_range(self.bootstrap, self.topic, partition, start, stop, chunk=chunk)
        )

    async def _tombstones_kept_ms(self) -> int | None:
        """The topic's `delete.retention.ms` (Kafka's default where the broker describes the
        topic without it); None when the broker will not say (a permission, an error)."""
        try:
            configs = await topic_configs(
                self.bootstrap, [self.topic], ["delete.retention.ms", "cleanup.policy"]
            )
        except KafkaError as e:
            configs, why = {}, type(e).__name__
        else:
            why = "not described"
        config = configs.get(self.topic)
        if config is None:
            log.warning("%s: cannot read delete.retention.ms (%s)", self.topic, why)
            return None
        return int(config.get("delete.retention.ms", DEFAULT_DELETE_RETENTION_MS))

    async def _complete(self, partition: int) -> int:
        """Where the complete batches end (after `last_applied`; else the high watermark)."""
        end = self._complete_end.get(partition)
        if end is None:
            end = self._ends.get(partition) or await self._end(partition)
        return end

    async def entries(
        self, partition: int, start: int = 0
    ) -> AsyncGenerator[list[tuple[bytes, bytes | None]], None]:
        """Entries from `start` up to the last applied offset (call `last_applied` first, as a
        restore does): what follows it belongs to a batch that was never completed, and is
        done again."""
        end = await self._complete(partition)
        async with self._read(partition, start, end) as chunks:
            async for chunk in chunks:
                if any(r.key is None for r in chunk):
                    raise _keyless(f"{self.topic}[{partition}]", chunk)
                yield [(r.key, r.value) for r in chunk]
