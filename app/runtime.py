"""Runs a pipeline batch by batch: process → produce outputs and changelog → commit state.

Client-agnostic: the live Faust worker and the replay both hand batches to a `PipelineRunner`
and give it a `Sender`. The order of steps is what makes restarts exact without broker
transactions: outputs and changelog entries are acknowledged by the broker *before* the state
and its applied source offset are committed atomically to RocksDB. A crash in between replays
the batch, which re-sends byte-identical outputs (deterministic), and never double-counts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from agents.base import (
    BatchOutput,
    OutRecord,
    Pipeline,
    Record,
    SourceRecord,
    fit_copy,
    source_headers,
)
from app import metrics
from app.chaos import ChaosKill
from app.state_guard import broker_data_lost
from app.state_restore import ChangelogSource, StateOpener
from app.topology import Topology
from tables.partition_state import PartitionState
from tables.rocks import StateError

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Produce:
    """A record addressed to a physical topic (partition None = by key)."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None
    headers: list[tuple[str, bytes]]
    # A changelog entry: all of this topic+partition's records of one send go out as one
    # record batch (appended atomically) or, if they cannot fit, as batches in order.
    atomic: bool = False
    # Must not land before the send's other records (a changelog entry of the batch whose
    # outputs go out in the same send): sent once those are acknowledged.
    after_outputs: bool = False
    # An output whose topic+partition's records of one send must land in order, each record
    # batch after the one before it (`OutRecord.in_order`).
    in_order: bool = False


@dataclass(frozen=True, slots=True)
class SourceCommit:
    """Where the source stands once a batch is durable: its consumer group's next offset."""

    topic: str
    partition: int
    offset: int  # the next offset to read (applied + 1)
    group: str


# Produces one batch's records; with exactly_once also commits `SourceCommit` in the same
# transaction (at_least_once senders ignore it: the consumer commits on its own).
Sender = Callable[[list[Produce], SourceCommit], Awaitable[None]]
# (partition, start, end) → chunks of the source records with start <= offset < end
GapReader = Callable[[int, int, int], AsyncIterator[list[SourceRecord]]]


class SourceEndBehind(RuntimeError):
    """A source partition's end looks at or before what its state applied, not yet for long
    enough to call it lost: retry the batch (nothing of it was applied)."""


# One batch's changelog entries should fit in one Kafka record batch (appended atomically by
# the broker; the default broker limit is 1 MB): bigger processing batches are split. What one
# record changes cannot be split (one record can close every open window of its partition):
# its entries go out as several record batches in order, the applied offset last, and a
# restore applies entries only up to the last applied offset in the changelog.
CHANGELOG_BATCH_BYTES = 512 * 1024
# A pipeline raising on a batch is a bug met by a record: that record goes to the DLQ with this
# reason. Out of memory, an I/O error or a stored value that cannot be decoded
# (`_NO_RECORDS_FAULT`; the last two are `StateError`s) is not, and stops the worker.
PROCESSING_ERROR = "processing_error"
_NO_RECORDS_FAULT = (MemoryError, OSError, StateError)
PRODUCER_BATCH_BYTES = 1_000_000  # under the default broker max.message.bytes (1 MB)


class PipelineRunner:
    """Owns one pipeline's per-partition state for one version."""

    def __init__(
        self,
        pipeline: Pipeline,
        topology: Topology,
        send: Sender,
        read_gap: GapReader | None = None,
        changelog_source: ChangelogSource | None = None,
        one_request: bool = False,
        wall_clock: Callable[[], float] = time.time,
        hold_changelog: bool = False,
        monotonic: Callable[[], float] = time.monotonic,
        before_open: Callable[[int], Awaitable[None]] | None = None,
    ) -> None:
        self.pipeline = pipeline
        # Each batch's changelog entries go out with the next batch's outputs, in one produce
        # request, instead of in a request of their own (see `_make_durable_together`).
        self.hold_changelog = hold_changelog
        # A partition's durable steps and held-entry sends, one at a time: a held batch's
        # entries must never be in two requests at once (a retried copy could land after
        # the next batch's entries).
        self._locks: dict[int, asyncio.Lock] = {}
        self._sending_held: asyncio.Task[None] | None = None
        self.wall_clock = wall_clock  # s since the epoch: record ages (Kafka timestamps)
        # `send` accepts several partitions' records in one call (at_least_once); a
        # transactional sender commits one source partition per transaction instead.
        self.one_request = one_request
        self.topology = topology
        self.send = send
        self.read_gap = read_gap
        self.changelog = topology.changelog(pipeline)
        self._opener = StateOpener(
            pipeline, topology, self.changelog, changelog_source, before_open
        )
        self._states: dict[int, PartitionState] = {}
        # Partitions whose delivered batches follow on from their state (see `_gap_before`).
        self._following: set[int] = set()
        # Per open partition, the offset before the first record taken from it since it
        # opened: from there on, every offset without a record is counted (`_counted_after`).
        self._taken_after: dict[int, int] = {}
        # Its source has a commit marker after each transaction (Kappa writes it so): offsets
        # without a record are expected there, and counted without a warning.
        self._markers_expected = (
            topology.settings.exactly_once and pipeline.source in topology.produced
        )
        self._label = (pipeline.name, str(topology.version))
        # Exported at 0 from the start: an alert on its increase then sees the first one.
        metrics.DLQ.labels(*self._label, PROCESSING_ERROR)
        metrics.SOURCE_OFFSETS_MISSING.labels(*self._label)
        self._chaos = ChaosKill.from_env(pipeline.name)
        self._source = topology.physical(pipeline.source)
        self.monotonic = monotonic  # s: how long a source end has looked behind the state
        self._source_behind_since: dict[int, float] = {}

    async def state(self, partition: int) -> PartitionState:
        """The partition's state, opened on first use (restored from the changelog when the
        changelog is ahead of the local copy: the partition was processed elsewhere)."""
        st = self._states.get(partition)
        if st is None:
            st = self._states[partition] = await self._opener.open(partition)
        return st

    def open_partitions(self) -> set[int]:
        """The partitions whose state this runner has open."""
        return set(self._states)

    def open_state(self, partition: int) -> PartitionState | None:
        """The partition's state if this runner has it open (it is assigned here), else None."""
        return self._states.get(partition)

    async def check_log_kept(self, partition: int, high_watermark: int | None) -> None:
        """Refuse to go on if the source log ends before what the state has applied: the
        broker lost its data (the embedded broker keeps nothing across restarts), and the new
        records at low offsets would otherwise be skipped as already applied.

        Only once it has looked so for `KAPPA_SOURCE_END_GRACE_MS`: until then `SourceEndBehind`
        asks for the batch to be retried, as a new partition leader can briefly report an end
        older than its predecessor did (KIP-207)."""
        if high_watermark is None:
            return
        applied = (await self.state(partition)).applied_offset
        if high_watermark > applied:
            self._source_behind_since.pop(partition, None)
            return
        where = (
            f"{self._source}[{partition}]: the broker's log ends at offset {high_watermark} but "
            f"the state has applied up to {applied}"
        )
        now = self.monotonic()
        since = self._source_behind_since.setdefault(partition, now)
        if (now - since) * 1000 < self.topology.settings.source_end_grace_ms:
            raise SourceEndBehind(where)
        raise broker_data_lost(where, self.topology.state_root())

    async def applied_offset(self, partition: int) -> int:
        return (await self.state(partition)).applied_offset

    async def handle(self, partition: int, records: Sequence[Record]) -> BatchOutput:
        """Process one partition's batch (offset order) and make it durable."""
        if not records:
            return BatchOutput()
        state = await self.state(partition)
        first = records[0].offset
        out = BatchOutput()
        if self._gap_before(partition, state, first):
            # Delivered records start past what the state has applied (the consumer's committed
            # offset ran ahead, or the state is new): apply the gap first, from the source.
            log.warning(
                "%s p%d: state applied up to offset %d but records start at %d; reading the gap",
                self.pipeline.name,
                partition,
                state.applied_offset,
                first,
            )
            async for chunk in self.read_gap(partition, state.applied_offset + 1, first):
                out.extend(await self._process(state, chunk))
        out.extend(await self._process(state, records))
        self._following.add(partition)
        return out

    def _gap_before(self, partition: int, state: PartitionState, first: int) -> bool:
        """Whether records before `first` must be read from the source first. Only the first
        batch delivered after the partition was opened can leave a gap: later ones follow the
        consumer's own position, and offsets skipped between them hold no records
        (transaction markers, or records compacted away)."""
        return (
            self.read_gap is not None
            and partition not in self._following
            and first > state.applied_offset + 1
        )

    async def handle_many(self, batches: Mapping[int, Sequence[Record]]) -> BatchOutput:
        """Several partitions' batches, made durable together: their outputs, then their
        changelog entries, go out in one produce request each (not one per partition), then
        each partition's state commits. A batch that needs its gap read first or is too big
        for one changelog batch takes `handle`'s path, after the others, as does every batch
        when the sender is transactional (one transaction per source partition); those run
        concurrently, so their round trips overlap."""
        ready: list[tuple[PartitionState, BatchOutput, int]] = []
        started: list[float] = []
        first_ts: list[int | None] = []
        alone: list[tuple[int, Sequence[Record]]] = []
        try:
            for partition, records in batches.items():
                if not records:
                    continue
                state = await self.state(partition)
                if self._gap_before(partition, state, records[0].offset) or not self.one_request:
                    alone.append((partition, records))
                    continue
                t0 = time.perf_counter()
                out, failed = self._try_staged(state, records)
                if failed is not None:  # isolated on `handle`'s path
                    alone.append((partition, records))
                    continue
                if len(records) > 1 and state.staged_bytes() > CHANGELOG_BATCH_BYTES:
                    state.discard()
                    alone.append((partition, records))
                    continue
                ready.append((state, out, records[-1].offset))
                started.append(t0)
                first_ts.append(records[0].timestamp)
        except BaseException:  # e.g. a restore failed: what is staged would be applied twice
            for state, _, _ in ready:
                state.discard()
            raise
        total = BatchOutput()
        if ready:
            await self._make_durable_together(ready)
            done = time.perf_counter()
            now = self.wall_clock()
            for (state, out, _), t0, ts in zip(ready, started, first_ts):
                self._following.add(state.partition)
                total.extend(out)
                metrics.BATCH_SECONDS.labels(*self._label).observe(done - t0)
                metrics.record_age(*self._label, ts, now)
        if alone:
            await run_concurrently([self._handle_into(total, p, recs) for p, recs in alone])
        return total

    async def _handle_into(
        self, total: BatchOutput, partition: int, records: Sequence[Record]
    ) -> None:
        total.extend(await self.handle(partition, records))

    async def _process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        """Process records and make them durable; records that make the pipeline raise are
        set aside (`_isolate`)."""
        t0 = time.perf_counter()
        staged, failed = self._try_staged(state, records)
        if failed is not None:
            return await self._isolate(state, records, failed)
        return await self._make_staged_durable(state, records, staged, t0)

    async def _make_staged_durable(
        self, state: PartitionState, records: Sequence[Record], out: BatchOutput, t0: float
    ) -> BatchOutput:
        staged = state.staged_bytes()
        if len(records) > 1 and staged > CHANGELOG_BATCH_BYTES:
            # Too much state change for one atomic changelog batch: split the records into as
            # many chunks as the measured size needs (with room), each checked again.
            state.discard()
            chunks = min(len(records), 2 * -(-staged // CHANGELOG_BATCH_BYTES))
            size = -(-len(records) // chunks)
            out = BatchOutput()
            for i in range(0, len(records), size):
                out.extend(await self._process(state, records[i : i + size]))
            return out
        await self._make_durable(state, out, records[-1].offset)
        metrics.BATCH_SECONDS.labels(*self._label).observe(time.perf_counter() - t0)
        metrics.record_age(*self._label, records[0].timestamp, self.wall_clock())
        return out

    def _staged(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        """The pipeline's outputs for `records`, their state changes staged; if it raises, what
        it staged is discarded, so a retry does not apply those records twice."""
        if records:
            self._taken_after.setdefault(state.partition, records[0].offset - 1)
        try:
            return self.pipeline.process(state, records)
        except BaseException:
            state.discard()
            raise

    async def _isolate(
        self, state: PartitionState, records: Sequence[Record], error: Exception
    ) -> BatchOutput:
        """The batch raised: a bug that some records meet. Each such record goes to the DLQ
        (`processing_error`) and the others are processed as usual, so no record can stop a
        partition for good; a replay redoes them once the bug is fixed.

        The next record the batch cannot get past is found by galloping (prefixes of 1, 2,
        4, ... records, then bisecting; nothing stays staged in between), so finding it costs
        in proportion to how far it is. What precedes it is made durable together with its
        dead letter; dead letters with nothing before them wait for the next durable step, so
        a bug that meets every record costs one step, not one per record."""
        out = BatchOutput()
        waiting = BatchOutput()  # dead letters not yet durable (they change no state)
        waiting_offset = -1
        dead_letters = 0

        async def make_waiting_durable() -> None:
            nonlocal waiting
            if waiting.records:
                await self._make_durable(state, waiting, waiting_offset)
                out.extend(waiting)
                waiting = BatchOutput()

        while records:
            good, bad, size = 0, 0, 1
            while True:
                n = min(size, len(records))
                failure = self._probe(state, records[:n])
                if failure is not None:
                    bad, error = n, failure
                    break
                good = n
                if n == len(records):
                    break
                size *= 2
            if not bad:  # the rest goes through
                await make_waiting_durable()
                out.extend(await self._process(state, records))
                break
            while bad - good > 1:
                middle = (good + bad) // 2
                failure = self._probe(state, records[:middle])
                if failure is None:
                    good = middle
                else:
                    bad, error = middle, failure
            poison = records[good]
            if not dead_letters:
                log.error(
                    "%s p%d: offset %d raised %s; sent to the DLQ as processing_error",
                    self.pipeline.name,
                    state.partition,
                    poison.offset,
                    type(error).__name__,
                    exc_info=error,
                )
            dead_letters += 1
            dead = BatchOutput()
            dead.add_dead_letter(self.pipeline.dlq, poison, PROCESSING_ERROR, type(error).__name__)
            dead.counts.events = 1
            if good:
                before = self._staged(state, records[:good])
                if good > 1 and state.staged_bytes() > CHANGELOG_BATCH_BYTES:
                    state.discard()
                    await make_waiting_durable()
                    out.extend(await self._process(state, records[:good]))
                    before = BatchOutput()
                waiting.extend(before)
            waiting.extend(dead)
            waiting_offset = poison.offset
            if good:  # state is staged: durable now, before the next probe discards it
                await make_waiting_durable()
            records = records[good + 1 :]
        await make_waiting_durable()
        if dead_letters > 1:
            log.error(
                "%s p%d: %d records of the batch raised; sent to the DLQ as processing_error",
                self.pipeline.name,
                state.partition,
                dead_letters,
            )
        return out

    def _try_staged(
        self, state: PartitionState, records: Sequence[Record]
    ) -> tuple[BatchOutput, Exception | None]:
        """`_staged`, with what a record made the pipeline raise returned, not raised (so
        the caller's handling is not chained onto it). Errors that are no record's fault
        propagate."""
        try:
            return self._staged(state, records), None
        except _NO_RECORDS_FAULT:
            raise
        except Exception as e:
            return BatchOutput(), e

    def _probe(self, state: PartitionState, records: Sequence[Record]) -> Exception | None:
        """What processing `records` raises (None if nothing), leaving nothing staged."""
        _, failed = self._try_staged(state, records)
        if failed is None:
            state.discard()
        return failed

    async def flush(self, partition: int) -> BatchOutput:
        """Close every open window of a partition (end of a bounded replay) durably."""
        state = await self.state(partition)
        out = self.pipeline.flush(state)
        await self._make_durable(state, out, state.applied_offset)
        return out

    async def _make_durable(self, state: PartitionState, out: BatchOutput, applied: int) -> None:
        await self._make_durable_together([(state, out, applied)])

    async def _make_durable_together(
        self, batches: Sequence[tuple[PartitionState, BatchOutput, int]]
    ) -> None:
        """Send every batch's outputs and changelog entries; once the broker acknowledged all
        of them, commit each partition's state with its applied offset.

        With `hold_changelog`, a batch's changelog entries wait for the partition's next
        batch (or `send_held`) and go out in the same request as its outputs: one produce
        round trip per batch instead of two (outputs, then the entries that may only land
        after them). Until they are acknowledged the batch is held in memory, never in the
        store, so local state is never ahead of the changelog; a crash loses the held batch,
        which the restart reads again from the source (its outputs are sent again)."""
        try:
            async with self._locked(state.partition for state, _, _ in batches):
                await self._send_and_commit(batches)
        except BaseException:  # failed or cancelled (even waiting for a lock): nothing staged
            for state, _, _ in batches:  # may stay, or a retry would apply it twice
                state.discard()
            raise

    async def _send_and_commit(
        self, batches: Sequence[tuple[PartitionState, BatchOutput, int]]
    ) -> None:
        self._chaos.step("before-send", len(batches))
        hold = self.hold_changelog and all(
            applied > state.applied_offset for state, _, applied in batches
        )  # a flush (no new offset) goes out whole, or a restore could not tell it is missing
        produce: list[Produce] = []
        commits: list[SourceCommit] = []
        for state, out, applied in batches:
            produce.extend(self._outputs_of(state, out))
            held = state.held().items()  # acknowledged outputs: may land at once
            produce.extend(self._changelog_of(state.partition, held, after_outputs=False))
            entries = state.prepare(applied)
            if not hold:
                produce.extend(self._changelog_of(state.partition, entries, after_outputs=True))
            commits.append(
                SourceCommit(self._source, state.partition, applied + 1, self.topology.group_id)
            )
        await self.send(produce, commits[0])
        self._chaos.step("after-send", len(batches))
        for state, out, applied in batches:
            after = self._counted_after(state, applied)
            missing = max(0, applied - after - out.counts.events)
            if hold:
                state.commit_held()
                state.hold()
            else:
                state.commit()
            self._chaos.step("after-commit")
            self._chaos.batch_done()
            metrics.record_batch(
                self.pipeline.name, self.topology.version, out.counts, len(out.records)
            )
            if missing:
                self._say_missing(state.partition, missing, after, applied)
            stream_time = state.stream_time_ms()
            if stream_time is not None:
                metrics.STREAM_TIME.labels(*self._label, str(state.partition)).set(stream_time)

    def _counted_after(self, state: PartitionState, applied: int) -> int:
        """The offset after which a batch applied up to `applied` is checked for offsets that
        held no record: the state's applied offset, or the one before the first record taken
        from the partition, when that came after it (offsets before a log's start, or a
        replay's, are not the partition's to count). Every record taken in between was counted
        as an event, so the rest of the span had none."""
        return max(state.applied_offset, self._taken_after.get(state.partition, applied))

    def _say_missing(self, partition: int, missing: int, after: int, applied: int) -> None:
        metrics.SOURCE_OFFSETS_MISSING.labels(*self._label).inc(missing)
        if not self._markers_expected:  # said once per 30 s at most (`app.log_repeats`)
            log.warning(
                "%s p%d: %d source offsets after %d, up to %d, held no record: records lost "
                "before they were applied, unless the source is written in transactions (a "
                "commit marker each)",
                self.pipeline.name,
                partition,
                missing,
                after,
                applied,
            )

    def _outputs_of(self, state: PartitionState, out: BatchOutput) -> list[Produce]:
        """A batch's outputs, to the version's physical topics, with source headers where a
        record passes a source record on."""
        physical = self.topology.physical
        return [
            Produce(
                physical(r.topic), None, r.key, r.value, r.timestamp, r.headers, in_order=r.in_order
            )
            if r.source_offset is None
            else self._copy_of_source(r, state.partition, r.source_offset)
            for r in out.records
        ]

    def _changelog_of(
        self, partition: int, entries: Iterable[tuple[bytes, bytes | None]], after_outputs: bool
    ) -> list[Produce]:
        """Changelog entries as records of one atomic batch."""
        changelog = self.changelog
        return [
            Produce(changelog, partition, k, v, None, [], atomic=True, after_outputs=after_outputs)
            for k, v in entries
        ]

    @contextlib.asynccontextmanager
    async def _locked(self, partitions: Iterable[int]) -> AsyncIterator[None]:
        """Hold the partitions' locks (taken in order: no deadlock between callers)."""
        async with contextlib.AsyncExitStack() as stack:
            for p in sorted(set(partitions)):
                lock = self._locks.get(p)
                if lock is None:
                    lock = self._locks[p] = asyncio.Lock()
                await stack.enter_async_context(lock)
            yield

    def send_held_soon(self) -> None:
        """The source has nothing waiting: send the held changelog entries now rather than
        with the next batch (a batch that comes first takes them along)."""
        if self._sending_held is not None and not self._sending_held.done():
            return
        if any(st.held() for st in self._states.values()):
            task = asyncio.ensure_future(self.send_held())
            task.add_done_callback(_log_failure)
            self._sending_held = task

    def stop_sending_held(self) -> None:
        """Cancel a background send of held entries (stopping; it may be retrying forever
        against an unreachable broker). What it did not send is read again on restart."""
        if self._sending_held is not None:
            self._sending_held.cancel()

    async def send_held(self, partitions: Iterable[int] | None = None) -> None:
        """Send the held changelog entries of `partitions` (default: all) and commit those
        batches; return once done (before a partition is let go, or a replay ends)."""
        wanted = self._states if partitions is None else set(partitions) & set(self._states)
        parts = [p for p in wanted if self._states[p].held()]  # lock no other partition
        async with self._locked(parts):
            held = [(st, st.held()) for p in parts if (st := self._states.get(p)) and st.held()]
            if not held:
                return
            produce: list[Produce] = []
            for st, entries in held:
                produce.extend(self._changelog_of(st.partition, entries.items(), False))
            first = held[0][0]
            await self.send(
                produce,
                SourceCommit(
                    self._source,
                    first.partition,
                    first.applied_offset + 1,
                    self.topology.group_id,
                ),
            )
            for st, entries in held:
                if self._states.get(st.partition) is st:  # not let go meanwhile
                    st.commit_held(entries)

    def _copy_of_source(self, r: OutRecord, partition: int, offset: int) -> Produce:
        """A record that passes a source record on (DLQ, late): with the source position in
        its headers, and cut to what the broker accepts (`KAPPA_COPY_MAX_BYTES`)."""
        headers = [*r.headers, *source_headers(self._source, partition, offset)]
        key, value, headers = fit_copy(
            r.key, r.value, headers, self.topology.settings.copy_max_bytes
        )
        return Produce(self.topology.physical(r.topic), None, key, value, r.timestamp, headers)

    async def hand_over(self, partitions: Iterable[int]) -> None:
        """Revoked partitions: send their held changelog entries, then let them go, so
        whoever takes one over restores all of it from the changelog (no batch read again)."""
        partitions = set(partitions)
        await self._background_send_done()
        await self.send_held(partitions)
        for p in partitions:
            self.close_partition(p)

    async def _background_send_done(self) -> None:
        """Wait for a background send of held entries (`send_held_soon`): it may hold entries
        of partitions already closed, which must not land after their next owner's. The
        caller's deadline cancels it with the caller; a failure was logged by the task."""
        task = self._sending_held
        if task is None or task.done():
            return
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller was cancelled (its deadline): the send went with it
        except Exception:
            return

    def close_partition(self, partition: int) -> None:
        """Let a partition go; a held batch not sent (`send_held`) is read again from the
        source by whoever opens the partition next."""
        st = self._states.pop(partition, None)
        self._following.discard(partition)
        self._taken_after.pop(partition, None)
        self._source_behind_since.pop(partition, None)
        # Its stream time is its next owner's to export: a frozen series here would be stale.
        with contextlib.suppress(KeyError):
            metrics.STREAM_TIME.remove(*self._label, str(partition))
        if st is not None:
            st.store.close()

    def close(self) -> None:
        for p in list(self._states):
            self.close_partition(p)


class SenderClosed(Exception):
    """The sender was closed, as the process stops: a batch not acknowledged yet is not
    retried (nothing could send it); its records are read again on restart. Not a
    `KafkaError`, so that nothing takes it for broker trouble."""


def _log_failure(task: asyncio.Task[None]) -> None:
    """A background send of held changelog entries failed: the batches stay held and go out
    with the partitions' next batches; said here so a failure is never silent."""
    if task.cancelled() or task.exception() is None:
        return
    if isinstance(task.exception(), SenderClosed):  # stopping: read again on restart
        log.info("held changelog entries not sent: the worker is stopping")
        return
    log.error("sending held changelog entries failed", exc_info=task.exception())


async def run_concurrently(coros: Sequence[Awaitable[None]]) -> None:
    """Await all (e.g. one per partition, so their produce round trips overlap); on the first
    failure cancel the rest, wait for them, and raise that failure itself (not a group), so
    callers retry or stop as they would for one. A cancelled batch discards its staged state."""
    if len(coros) == 1:
        await coros[0]
        return
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        for task in asyncio.as_completed(tasks):
            await task
    finally:
        pending = [t for t in tasks if not t.done()]
        for t in pending:
            t.cancel()
        # Every outcome retrieved: a second failure is not logged later as never retrieved.
        await asyncio.gather(*tasks, return_exceptions=True)
