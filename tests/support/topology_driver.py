"""A topology test driver (Kafka Streams' `TopologyTestDriver`, for Kappa): the real pipelines
through the real `PipelineRunner` (RocksDB state in a directory, changelogs, held entries, gap
reads) over an in-memory log instead of a broker, run synchronously and step by step.

A test double for the broker at the unit level: what the broker and the consumer group do
(partitioning, acknowledgement, committed offsets, redelivery) is modelled as the runtime
relies on it, not as Tansu or Kafka implement it; integration tests keep using the real broker.

What is modelled:
- topics of partitions, each a list of records (offset = index); keyed records without a
  partition land where the real producer puts them (`app.batch_producer.KeyPartitioner`);
- a sender like `BatchSender`: each (topic, partition) of a send is one group, appended whole;
  the groups ending with changelog entries marked `after_outputs` go out only once every other
  group of the send was acknowledged;
- a consumer per pipeline: a position per partition (what it delivers next), the consumer
  group's committed offset (`commit_offsets`, as faust commits acknowledged offsets now and
  then), and a restart that delivers from the committed offset (from 0 if none);
- crashes: `Batch(..., crash=CrashPoint(send, landed, committed))` lands only some groups of
  one of that batch's sends, then the process is gone (`CrashPoint`); landing them all is a
  crash after the acknowledgement, before RocksDB commits, or after some of the send's
  partitions committed (`committed`). A crash between steps is `Crash`.
  The local RocksDB copy keeps what was committed (its writes go through the WAL), or is lost
  (`Restart(lose_local_state=True)`) and restored from the changelog.

Not modelled: a record batch of one group cut in parts (a changelog batch too big for one
record batch, or a report's parts: the runtime sends them one after the other, so a crash can
land a prefix), a crash during a restore, record timestamps set by the broker, compaction,
rebalances between workers.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agents.base import SourceRecord
from app.batch_producer import KeyPartitioner
from app.runtime import PipelineRunner, Produce, SourceCommit
from app.settings import load_settings
from app.topology import Topology
from replay.latest import RESULT_OUTPUTS, latest_entry
from tests.support.fakes import Entry, ListChangelog


class Crashed(Exception):
    """The process died in the middle of a send (raised by the driver's sender)."""


class InMemoryLog:
    """Topics of partitions, each a list of records whose offset is their index."""

    def __init__(self) -> None:
        self.topics: dict[str, list[list[SourceRecord]]] = {}
        self._partitioner = KeyPartitioner()

    def create(self, topic: str, partitions: int) -> None:
        self.topics.setdefault(topic, [[] for _ in range(partitions)])

    def partitions(self, topic: str) -> int:
        return len(self.topics[topic])

    def partition_for(self, topic: str, key: bytes | None) -> int:
        """Where the real producer puts a record of `topic` with `key`."""
        return self._partitioner(key, list(range(self.partitions(topic))))

    def append(
        self,
        topic: str,
        partition: int | None,
        key: bytes | None,
        value: bytes | None,
        timestamp: int | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> SourceRecord:
        if partition is None:
            partition = self.partition_for(topic, key)
        records = self.topics[topic][partition]
        rec = SourceRecord(topic, partition, len(records), timestamp, key, value, list(headers))
        records.append(rec)
        return rec

    def records(
        self, topic: str, partition: int, start: int = 0, end: int | None = None
    ) -> list[SourceRecord]:
        return self.topics[topic][partition][start:end]

    def end(self, topic: str, partition: int) -> int:
        return len(self.topics[topic][partition])


class TopicChangelog:
    """A `ChangelogSource` over one in-memory changelog topic: `ListChangelog`'s rules (a
    restore ends at the newest marker; a local copy resumes after its own one) per partition."""

    def __init__(self, log: InMemoryLog, topic: str) -> None:
        self.log = log
        self.topic = topic

    def _of(self, partition: int) -> ListChangelog:
        def entries() -> list[Entry]:
            return [(r.key or b"", r.value) for r in self.log.records(self.topic, partition)]

        return ListChangelog(entries)

    async def last_applied(self, partition: int, fresh: bool = False) -> int:
        return await self._of(partition).last_applied(partition, fresh)

    async def entries(self, partition: int, start: int = 0) -> AsyncGenerator[list[Entry], None]:
        async for chunk in self._of(partition).entries(partition, start):
            yield chunk

    async def resume_point(self, partition: int, applied: int, origin: bytes) -> int | None:
        return await self._of(partition).resume_point(partition, applied, origin)


class _CommitCrash:
    """Stands in for a runner's `ChaosKill`: tells the driver of each partition commit."""

    def __init__(self, driver: TopologyDriver, name: str, life: int) -> None:
        self.driver, self.name, self.life = driver, name, life

    def step(self, phase: str, batches: int = 1) -> None:
        if phase == "after-commit":
            self.driver._committed(self.name, self.life)

    def batch_done(self) -> None:
        pass


# -- the steps of a plan -------------------------------------------------------------------------


@dataclass(frozen=True)
class CrashPoint:
    """The process dies in its `send`-th send from now (0: the first): of that send's
    (topic, partition) groups, in the order they go out, those whose bit is set in `landed`
    were appended (-1: all of them, acknowledged, and the crash comes before RocksDB commits).
    With all landed, `committed` partitions of the send may commit their state first (in the
    order `PipelineRunner` commits them; all of them: the crash comes right after)."""

    send: int = 0
    landed: int = -1
    committed: int = 0


@dataclass(frozen=True)
class Batch:
    """The pipeline's consumer delivers up to `counts[p]` records of each source partition `p`
    from its position, as one batch (`PipelineRunner.handle_many`). `crash`: see the module."""

    pipeline: str
    counts: Mapping[int, int]
    crash: CrashPoint | None = None


@dataclass(frozen=True)
class Idle:
    """The pipeline's source has nothing waiting: its held changelog entries go out."""

    pipeline: str
    crash: CrashPoint | None = None


@dataclass(frozen=True)
class Commit:
    """The consumer group commits the pipeline's acknowledged offsets."""

    pipeline: str


@dataclass(frozen=True)
class Crash:
    """The pipeline's process dies between batches."""

    pipeline: str


@dataclass(frozen=True)
class Restart:
    """The pipeline's process starts again (after a crash, or a crash is implied)."""

    pipeline: str
    lose_local_state: bool = False


Step = Batch | Idle | Commit | Crash | Restart


@dataclass
class _Consumer:
    position: dict[int, int] = field(default_factory=dict)  # partition → next offset delivered
    committed: dict[int, int] = field(default_factory=dict)  # the group's committed offsets


class TopologyDriver:
    """Runs the topology's pipelines over an `InMemoryLog`; see the module docstring."""

    def __init__(self, state_dir: Path, env: Mapping[str, str] | None = None) -> None:
        self.settings = load_settings({"KAPPA_STATE_DIR": str(state_dir), **(env or {})})
        self.topology = Topology(self.settings, 1)
        self.log = InMemoryLog()
        for topic, (partitions, _) in self.topology.topic_spec().items():
            self.log.create(topic, partitions)
        self.pipelines = {p.name: p for p in self.topology.pipelines}
        self.runners: dict[str, PipelineRunner | None] = {}
        self.consumers = {name: _Consumer() for name in self.pipelines}
        self._crash_at: dict[str, CrashPoint] = {}
        self._commits_left: dict[str, int] = {}  # partition commits before an armed crash
        self._life = dict.fromkeys(self.pipelines, 0)  # a process's sends stop when it dies
        self._loop = asyncio.new_event_loop()
        for name in self.pipelines:
            self.runners[name] = self._new_runner(name)

    # -- input and output ----------------------------------------------------------------------
    def pipe(
        self,
        topic: str,
        records: Iterable[tuple[bytes | None, bytes | None, int | None]],
        partition: int | None = None,
    ) -> None:
        """Produce (key, value, timestamp) records to `topic` (by key, or to `partition`)."""
        physical = self.topology.physical(topic)
        self.log.create(physical, self.settings.partitions)
        for key, value, ts in records:
            self.log.append(physical, partition, key, value, ts)

    def records(self, topic: str) -> list[SourceRecord]:
        """Every record of a (logical) topic, partition by partition in offset order."""
        return [r for part in self.log.topics[self.topology.physical(topic)] for r in part]

    def latest(self, topic: str) -> dict[Any, bytes]:
        """The latest value per key, as a consumer upserting the topic keeps it: for the result
        outputs, by their result key (`replay.latest`, which `kappa export`/`diff` read; a
        flag byte, final or provisional, first); else by the record key. Tombstones delete."""
        fields = dict(RESULT_OUTPUTS).get(topic)
        physical = self.topology.physical(topic)
        out: dict[Any, bytes] = {}
        for r in self.records(topic):
            if fields is None:
                if r.value is None:
                    out.pop(r.key, None)
                else:
                    out[r.key] = r.value
                continue
            entry = latest_entry(r, fields, physical)
            if entry is not None:
                out[entry[0]] = entry[1]
        return out

    def distinct(self, topic: str) -> set[tuple[bytes | None, bytes | None, tuple[Any, ...]]]:
        """The topic's records as a set of (key, value, headers): copies sent again after a
        crash are the same record."""
        return {(r.key, r.value, tuple(r.headers)) for r in self.records(topic)}

    # -- running -------------------------------------------------------------------------------
    def run(self, plan: Iterable[Step]) -> None:
        for step in plan:
            match step:
                case Batch():
                    self.batch(step.pipeline, step.counts, step.crash)
                case Idle():
                    self.idle(step.pipeline, step.crash)
                case Commit():
                    self.commit_offsets(step.pipeline)
                case Crash():
                    self.crash(step.pipeline)
                case Restart():
                    self.restart(step.pipeline, step.lose_local_state)

    def batch(self, name: str, counts: Mapping[int, int], crash: CrashPoint | None = None) -> None:
        """Deliver and process one batch (nothing if the pipeline is down: restart it first)."""
        runner = self.runners[name]
        if runner is None:
            return
        source = self.topology.physical(self.pipelines[name].source)
        position = self.consumers[name].position
        taken = {
            p: self.log.records(source, p, position.get(p, 0), position.get(p, 0) + n)
            for p, n in sorted(counts.items())
            if n > 0
        }
        taken = {p: recs for p, recs in taken.items() if recs}
        if not taken:
            return
        if not self._survives(name, crash, runner.handle_many(taken)):
            return
        for p, recs in taken.items():  # acknowledged
            position[p] = recs[-1].offset + 1

    def idle(self, name: str, crash: CrashPoint | None = None) -> None:
        runner = self.runners[name]
        if runner is not None:
            self._survives(name, crash, runner.send_held())

    def commit_offsets(self, name: str) -> None:
        consumer = self.consumers[name]
        if self.runners[name] is not None:
            consumer.committed = dict(consumer.position)

    def crash(self, name: str) -> None:
        """The process dies: nothing is sent or committed any more. Its RocksDB directories
        are only released (their committed writes are on disk, through the WAL)."""
        runner = self.runners[name]
        if runner is None:
            return
        for p in list(runner.open_partitions()):
            st = runner.open_state(p)
            if st is not None:
                st.store.close()
        self.runners[name] = None
        self._life[name] += 1

    def restart(self, name: str, lose_local_state: bool = False) -> None:
        """Start the pipeline's process again (crashing it first if it runs): its consumer
        delivers from the group's committed offsets."""
        self.crash(name)
        if lose_local_state:
            shutil.rmtree(
                self.topology.state_root() / self.pipelines[name].name, ignore_errors=True
            )
        consumer = self.consumers[name]
        consumer.position = dict(consumer.committed)
        self.runners[name] = self._new_runner(name)

    def run_to_end(self, batch_size: int = 1_000_000) -> None:
        """Every pipeline, in dependency order, restarted if down, reads all its source."""
        for pipeline in self.topology.stages():
            name = pipeline.name
            if self.runners[name] is None:
                self.restart(name)
            source = self.topology.physical(pipeline.source)
            while True:
                position = self.consumers[name].position
                counts = {
                    p: self.log.end(source, p) - position.get(p, 0)
                    for p in range(self.log.partitions(source))
                }
                if not any(n > 0 for n in counts.values()):
                    break
                self.batch(name, {p: min(n, batch_size) for p, n in counts.items()})

    def applied_offset(self, name: str, partition: int) -> int:
        """The source offset the running pipeline's state of `partition` has applied (opening
        it, restored if need be, as the first batch would)."""
        runner = self.runners[name]
        assert runner is not None, f"{name} is down"
        return self._loop.run_until_complete(runner.applied_offset(partition))

    def close(self) -> None:
        for name in self.pipelines:
            runner = self.runners[name]
            if runner is not None:
                runner.close()
                self.runners[name] = None
        self._loop.run_until_complete(self._loop.shutdown_default_executor())
        self._loop.close()

    # -- the runner's collaborators ------------------------------------------------------------
    def _new_runner(self, name: str) -> PipelineRunner:
        pipeline = self.pipelines[name]
        source = self.topology.physical(pipeline.source)

        life = self._life[name]

        async def send(records: list[Produce], commit: SourceCommit) -> None:
            self._send(name, life, records)

        async def read_gap(partition: int, start: int, end: int) -> AsyncIterator[list[Any]]:
            yield self.log.records(source, partition, start, end)

        runner = PipelineRunner(
            pipeline,
            self.topology,
            send,
            read_gap,
            TopicChangelog(self.log, self.topology.changelog(pipeline)),
            one_request=True,  # at_least_once, as `kafka_pipeline_runner` builds it
            hold_changelog=True,
        )
        # The runtime's own fault-injection point (`KAPPA_CHAOS_KILL`, which kills the
        # process): here it raises `Crashed` between one partition's commit and the next.
        runner._chaos = _CommitCrash(self, name, life)  # type: ignore[assignment]
        return runner

    def _committed(self, name: str, life: int) -> None:
        """A partition of the armed crash's send committed its state."""
        left = self._commits_left.get(name)
        if left is None or self._life[name] != life:
            return
        if left > 1:
            self._commits_left[name] = left - 1
            return
        del self._commits_left[name]
        self._life[name] += 1
        raise Crashed(name)

    def _send(self, name: str, life: int, records: list[Produce]) -> None:
        """Append a send's groups as `BatchSender` sends them; at the armed crash point, only
        those it lands, then raise `Crashed` (and so does every later send of that process)."""
        if self._life[name] != life:
            raise Crashed(name)  # a send of a process that died (a concurrent partition's)
        groups: dict[tuple[str, int], list[Produce]] = {}
        for r in records:
            p = r.partition if r.partition is not None else self.log.partition_for(r.topic, r.key)
            groups.setdefault((r.topic, p), []).append(r)
        first = [tp for tp, recs in groups.items() if not recs[-1].after_outputs]
        second = [tp for tp, recs in groups.items() if recs[-1].after_outputs]
        point = self._crash_at.get(name)
        landing = -1
        if point is not None:
            if point.send > 0:
                self._crash_at[name] = CrashPoint(point.send - 1, point.landed)
            else:
                landing = point.landed
        lands = [landing == -1 or bool(landing >> i & 1) for i in range(len(groups))]
        if not all(lands[: len(first)]):  # the second request waits for all of the first
            lands[len(first) :] = [False] * len(second)
        for tp, landed in zip([*first, *second], lands, strict=True):
            if landed:
                for r in groups[tp]:
                    self.log.append(tp[0], tp[1], r.key, r.value, r.timestamp_ms, r.headers)
        if point is not None and point.send == 0:
            if landing == -1 and point.committed > 0:
                self._commits_left[name] = point.committed  # `_CommitCrash` takes it from here
                return
            self._life[name] += 1  # dead: sends of its other tasks under way land nothing
            raise Crashed(name)

    def _survives(self, name: str, crash: CrashPoint | None, work: Any) -> bool:
        """Run `work` (a runner coroutine) with `crash` armed; False if the process crashed (it
        is down: `restart` it)."""
        if crash is not None:
            self._crash_at[name] = crash
        try:
            self._loop.run_until_complete(work)
        except Crashed:
            self.crash(name)
            return False
        finally:
            self._crash_at.pop(name, None)
        if self._commits_left.pop(name, None) is not None:  # fewer partitions committed
            self.crash(name)  # than asked: the crash comes after the last, before the ack
            return False
        return True
