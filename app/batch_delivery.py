"""Batch delivery under Faust: raw messages go from faust's consumer to a pipeline in batches.

faust's stream path costs ~0.2 ms of CPU per event (event objects, queues, per-event acks and
context switches). Its conductor is pluggable, so for Kappa's topics the per-partition handler
only tracks the message (for faust's commit bookkeeping) and appends it to a bounded buffer,
which `app.pipeline_driver` drains a batch at a time into each partition's `PipelineRunner`;
`ack_offsets` then acks them into faust's commit bookkeeping. faust keeps the consumer group,
rebalancing, offset commits, flow control and the web server. A pipeline that stops taking
records (a restore, a batch retrying broker trouble) holds back only its own source
(`SourceHold`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from time import monotonic
from typing import TYPE_CHECKING, Any, Protocol

import faust
from aiokafka import TopicPartition
from aiokafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)
from faust.transport.conductor import Conductor
from faust.transport.consumer import ack_lock as faust_ack_lock
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread, Transport
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaDriverConsumer
from faust.types import TP, Message
from mode import Service

from app.batch_buffer import BatchBuffer
from app.commit_watch import watched_commit
from app.group_fence import GroupFence, InstanceFenced, stop_when_fenced
from app.group_leave import leave_on_close
from app.group_refusal import GroupRefusal, GroupRefused, stop_when_refused
from app.group_wait import GroupWait, JoinAnswers, watch_join_answers
from app.group_wait import log as group_wait_log
from app.partition_assignment import Claim, Partition, assign_partitions
from app.partition_owners import (
    OwnersByUrl,
    PartitionOwners,
    member_local_state,
    member_url,
    owners_bytes,
    parse_owners,
    with_local_state,
    with_url,
)
from app.raw_records import RAW_RECORDS, consumer_record
from app.state_guard import TopicsCheck

if TYPE_CHECKING:
    from app.runtime import PipelineRunner

log = logging.getLogger(__name__)

# A source's buffer still full after this long (s) holds back its partitions: a pipeline's
# batch takes far less; a restore, or a batch retrying broker trouble, can take much longer.
HOLD_AFTER_S = 1.0
# While a source is held back, how often (s) the fetch loop looks whether its buffer has room.
HELD_CHECK_S = 0.05
# A source held back this recently (s) is held back again as soon as its buffer is full.
HELD_LATELY_S = 10.0
# What a poll asks for when every partition is held back (no partitions at all would mean all).
NO_PARTITION = TP("", -1)


class BatchTopic(faust.Topic):  # type: ignore[misc]
    """A faust topic whose messages are delivered raw, in batches, to `buffer`."""

    buffer: BatchBuffer


class BatchConductor(Conductor):  # type: ignore[misc]
    def _build_handler(self, tp: TP, channels: Any) -> Callable[[Message], Any]:
        batch = [c for c in channels if isinstance(c, BatchTopic)]
        if not batch:
            return super()._build_handler(tp, channels)  # type: ignore[no-any-return]
        if len(channels) > 1:
            raise RuntimeError(f"{tp.topic} is delivered in batches and cannot have other readers")
        put = batch[0].buffer.put
        track = self.app.consumer.track_message

        async def on_message(message: Message) -> None:
            track(message)
            await put(message)

        return on_message


def sticky_assignor(
    consumer: Any,
    owners: PartitionOwners | None = None,
    local_state: Callable[[], Iterable[Partition]] | None = None,
) -> type[StickyPartitionAssignor]:
    """aiokafka's sticky assignor, for one consumer: it keeps its member's last assignment in
    class attributes, so each consumer gets a class of its own.

    Each member then keeps its partitions through a rebalance where it can, so a worker
    joining or leaving moves only the partitions it must: every partition that moves is
    restored from its whole changelog by its new owner. As leader it assigns with
    `app.partition_assignment` rather than aiokafka's algorithm, which evens out members'
    totals only and could give a worker whole pipelines' sources and another none of them;
    the join metadata stays aiokafka's, so a group of both kinds of worker (a rolling
    deploy) works whichever leads. aiokafka never tells the assignor the
    group generation its assignment is from, so each member would claim its partitions as of
    generation -1, and a member that dropped out of the group and came back with an old
    claim could win a partition from its current owner; the generation is taken from the
    consumer's coordinator instead, as the Java client does.

    With `owners`, the join also tells the group which worker's web server holds each
    partition (`app.partition_owners`), and `owners` is kept up to date with the map. With
    `local_state`, each join also says which partitions it returns (looked at at each join:
    the source partitions this worker has state directories for), and the leader hands them
    back to it where it can: a restarted worker claims nothing, but catches up from its
    changelogs only for partitions whose state it still has.

    The join names the subscribed topics sorted: faust subscribes with a set, whose order
    differs from process to process (string hashing is randomised), so a restarted worker
    joined with other metadata than it left with. The dev broker then refused a static
    member's SyncGroup until the group rebalanced (Apache Kafka keeps the member either way)."""

    def on_assignment(cls: type[StickyPartitionAssignor], assignment: Any) -> None:
        StickyPartitionAssignor.on_assignment.__func__(cls, assignment)  # type: ignore[attr-defined]
        coordinator = getattr(consumer, "_coordinator", None)
        if coordinator is not None and coordinator.generation > 0:
            cls.generation = coordinator.generation
        if owners is not None:
            owners.by_partition = parse_owners(assignment.user_data or b"")

    def metadata(cls: type[StickyPartitionAssignor], topics: Iterable[str]) -> Any:
        joined = StickyPartitionAssignor.metadata.__func__(cls, sorted(topics))  # type: ignore[attr-defined]
        if owners is None and local_state is None:
            return joined
        user_data = joined.user_data
        if local_state is not None:
            try:
                user_data = with_local_state(user_data, local_state())
            except OSError as e:  # the state directory unreadable: join without saying
                log.warning("Cannot list the local state for the group join: %s", e)
        if owners is not None:
            user_data = with_url(user_data, owners.own_url)
        return ConsumerProtocolMemberMetadata(joined.version, joined.subscription, user_data)

    def assign(cls: type[StickyPartitionAssignor], cluster: Any, members: Mapping[str, Any]) -> Any:
        subscriptions: dict[str, list[str]] = {}
        claims: dict[str, Claim] = {}
        stateful: dict[str, list[Partition]] = {}
        for member, meta in members.items():
            joined = cls.parse_member_metadata(meta)  # aiokafka's: it ignores what follows
            subscriptions[member] = joined.subscription
            claims[member] = Claim(
                joined.generation, [(p.topic, p.partition) for p in joined.partitions]
            )
            stateful[member] = member_local_state(meta.user_data or b"")
        partitions = {}
        for topic in sorted({t for topics in subscriptions.values() for t in topics}):
            numbers = cluster.partitions_for_topic(topic)
            if numbers is None:  # unknown to the cluster (yet): nothing of it to assign
                log.warning("No partition metadata for topic %r", topic)
            else:
                partitions[topic] = numbers
        assignments = assign_partitions(partitions, subscriptions, claims, stateful)
        held: OwnersByUrl = {}
        for member, meta in members.items():
            url = member_url(meta.user_data or b"")
            if url is not None:
                for topic, numbers in assignments[member].items():
                    held.setdefault(url, {}).setdefault(topic, []).extend(numbers)
        user_data = owners_bytes(held)
        return {
            m: ConsumerProtocolMemberAssignment(cls.version, sorted(a.items()), user_data)
            for m, a in assignments.items()
        }

    return type(
        "KappaStickyAssignor",
        (StickyPartitionAssignor,),
        {
            "on_assignment": classmethod(on_assignment),
            "metadata": classmethod(metadata),
            "assign": classmethod(assign),
        },
    )


class HoldableConsumer(Protocol):
    """What `SourceHold` uses of faust's consumer: its own flow control for full buffers."""

    _buffered_partitions: set[TP]
    _paused_partitions: set[TP]

    def assignment(self) -> set[TP]: ...

    def on_buffer_full(self, tp: TP) -> None: ...

    def on_buffer_drop(self, tp: TP) -> None: ...

    def _get_active_partitions(self) -> set[TP]: ...


class SourceHold:
    """Sources whose pipeline is not taking records and whose buffer stays full: their
    partitions are left out of the consumer's fetches until the buffer has room, as faust does
    for a full stream buffer (`on_buffer_full`). What was fetched for them stays in the
    client's buffer, so nothing is skipped.

    The fetch loop waiting for room instead would stop the worker's other pipelines, and its
    polls: past the max poll interval, aiokafka leaves the group (and faust never rejoins).
    `on_change(topic, held)` is told when a source is held back and let go."""

    def __init__(
        self,
        consumer: HoldableConsumer,
        buffers: Mapping[str, BatchBuffer],
        on_change: Callable[[str, bool], None] = lambda topic, held: None,
        clock: Callable[[], float] = monotonic,
    ) -> None:
        self.consumer = consumer
        self.buffers = buffers
        self.on_change = on_change
        self.clock = clock
        self.topics: set[str] = set()  # held back now
        self.held_at: dict[str, float] = {}  # clock() when each was last held back

    def wait_s(self, topic: str) -> float:
        """How long the fetch loop waits for room in the topic's full buffer before holding it
        back: not at all if it was held back lately (its pipeline is slow, and every wait would
        stop the other pipelines' deliveries again)."""
        held_at = self.held_at.get(topic)
        if held_at is not None and self.clock() - held_at < HELD_LATELY_S:
            return 0.0
        return HOLD_AFTER_S

    def hold(self, topic: str) -> None:
        consumer = self.consumer
        for tp in consumer.assignment():
            if tp.topic == topic:
                consumer.on_buffer_full(tp)
        # faust declines while it recovers tables of its own (Kappa has none): the next full
        # buffer then waits a second for room again instead of being held at once
        if any(tp.topic == topic for tp in consumer._buffered_partitions):
            self.held_at[topic] = self.clock()
            if topic not in self.topics:
                self.topics.add(topic)
                self.on_change(topic, True)

    def release_drained(self) -> None:
        """Fetch again for the held sources whose buffer has room."""
        consumer = self.consumer
        for topic in [t for t in self.topics if not self.buffers[t].full]:
            self.topics.discard(topic)
            assigned = consumer.assignment()
            for tp in [tp for tp in consumer._buffered_partitions if tp.topic == topic]:
                if tp in assigned and tp not in consumer._paused_partitions:
                    consumer.on_buffer_drop(tp)
                else:  # revoked, or paused by faust for a rebalance (it resumes them after)
                    consumer._buffered_partitions.discard(tp)
            self.on_change(topic, False)


def seek_back(consumer: Any, first_offsets: Mapping[TP, int]) -> list[TP]:
    """Seek each partition of the aiokafka `consumer` still assigned to it back to the given
    offset, if its position is past it; returns those sought. Never forward: the position may
    already be behind it (a rebalance's seek to the committed offset, or records left
    before), and records read twice are skipped as already applied, where records skipped
    would be lost. A partition whose position is being reset (a new assignment) is left to
    that reset. Reaches into aiokafka's subscription state (pinned in pyproject)."""
    subscription = consumer._subscription
    sought = []
    for tp, offset in first_offsets.items():
        ktp = TopicPartition(tp.topic, tp.partition)
        if not subscription.is_assigned(ktp):
            continue
        state = subscription._assigned_state(ktp)
        if state.has_valid_position and state.position > offset:
            consumer.seek(ktp, offset)
            sought.append(tp)
    return sought


class KappaConsumerThread(AIOKafkaConsumerThread):  # type: ignore[misc]
    """faust's consumer thread with settings faust does not expose: read_committed under
    exactly_once (faust ties it to its own transactions, which Kappa does not use), the
    fetch wait (faust hard-codes 1500 ms; brokers that answer a fetch only when the wait
    expires, like the embedded one, would add that to every record's latency), and raw
    records (`app.raw_records`: no `ConsumerRecord` per fetched record, as in a replay),
    a LeaveGroup on stop in every generation (`app.group_leave`), the static group
    membership of `KAPPA_GROUP_INSTANCE_ID` only (faust would also take its own
    `CONSUMER_GROUP_INSTANCE_ID` environment variable), its group coordinator's answers
    recorded for a worker kept out of its group to say (`app.group_wait`), a static member
    fenced by another process with its id stopped (`app.group_fence`), and a member the broker
    refuses its group or its offset commits for good (a session timeout out of its bounds, no
    ACL) stopped (`app.group_refusal`)."""

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        app: KappaApp = self.app
        # Sticky only. Offering round-robin too (what faust picks for an app without faust
        # tables, so what workers before this one use) would let a group mix them during an
        # in-place upgrade, but doubles every group join on the dev broker (2 s → 4 s).
        consumer._partition_assignment_strategy = (
            sticky_assignor(consumer, app.kappa_partition_owners, app.kappa_local_state),
        )
        if app.kappa_read_committed:
            consumer._isolation_level = "read_committed"
        wait_ms = app.kappa_fetch_max_wait_ms
        if wait_ms is not None:
            consumer._fetch_max_wait_ms = wait_ms  # read by the fetcher aiokafka builds at start
        consumer._value_deserializer = RAW_RECORDS  # likewise; faust sets no deserializer
        consumer._group_instance_id = app.kappa_group_instance_id  # read by start's coordinator
        watch_join_answers(consumer, app.kappa_join_answers)
        if app.kappa_group_instance_id is not None:
            fence = app.kappa_group_fence = GroupFence(
                consumer._group_id, app.kappa_group_instance_id
            )
            loop = self.parent_loop  # the worker's: the stop runs there

            def stop() -> None:  # called in the consumer's thread
                line = fence.line()

                async def stopping() -> None:  # the senders closed first, then the stop
                    if app.kappa_on_fenced is not None:
                        await app.kappa_on_fenced()
                    await app.kappa_stop_on_error(InstanceFenced(line), line)

                asyncio.run_coroutine_threadsafe(stopping(), loop)

            stop_when_fenced(consumer, fence, stop)
        worker_loop = self.parent_loop

        def stop_refused(line: str) -> None:  # called in the consumer's thread
            stopping = app.kappa_stop_on_error(GroupRefused(line), line)
            asyncio.run_coroutine_threadsafe(stopping, worker_loop)

        # after the fence's: it sees aiokafka's requests
        stop_when_refused(consumer, app.kappa_group_refusal, stop_refused)
        return consumer

    async def rewind(self, first_offsets: Mapping[TP, int]) -> list[TP]:
        """`seek_back`, in the consumer's thread (`call_thread`)."""
        return seek_back(self._ensure_consumer(), first_offsets)

    def _out_of_group(self) -> bool:
        """Fenced, or refused its group for good: the broker would refuse a commit, and faust
        would crash on the refusal."""
        app: KappaApp = self.app
        fence = app.kappa_group_fence
        return (fence is not None and fence.fenced) or app.kappa_group_refusal.refused

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        """faust's commit, stopping the worker if one of its topics is gone (`watched_commit`).
        A member out of its group commits nothing more (`_out_of_group`): a fenced one's
        partitions are another process's now."""
        app: KappaApp = self.app
        if self._out_of_group():
            return False
        commit = super()._commit(offsets)
        if app.kappa_topics_gone is None:
            done: bool = await commit
        else:
            topics = {tp.topic for tp in offsets}
            done = await watched_commit(
                commit, topics, app.kappa_topics_gone, app.kappa_stop_on_error
            )
        # fenced or refused while it was under way: refused unsent (`stop_when_fenced`,
        # `stop_when_refused`)
        return done and not self._out_of_group()

    async def on_thread_stop(self) -> None:
        if self._consumer is not None:
            refusal = self.app.kappa_group_refusal
            # the dev broker's first generation included
            leave_on_close(self._consumer, lambda: refusal.refused)
        await super().on_thread_stop()

    async def stop(self) -> None:
        """mode joins the consumer thread from the event loop, blocking it. A rebalance
        callback the thread was running then waited for that loop forever: a worker stopped
        while joining its group hung until its shutdown deadline. Joined off the loop here."""
        if self._started.is_set():
            await Service.stop(self)  # what mode's `ServiceThread.stop` does first
            if self._thread is not None:
                await asyncio.get_running_loop().run_in_executor(None, self._thread.stop)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        if self.should_stop:  # stopping: nothing will take records from them
            return
        await super().on_partitions_assigned(assigned, generation_id)


class BatchingConsumer(AIOKafkaDriverConsumer):  # type: ignore[misc]
    """faust's consumer, delivering Kappa's topics a fetch at a time.

    faust's own drain loop awaits a callback per message under `wait_first` (a task per
    message); here each partition's records of one fetch are converted, tracked and buffered
    together. Read offsets, offset-gap bookkeeping (for commits over compacted or
    transactional logs) and generation checks are kept; other topics take faust's path.
    """

    def _new_consumer_thread(self) -> KappaConsumerThread:
        return KappaConsumerThread(self, loop=self.loop, beacon=self.beacon)

    _kappa_hold: SourceHold | None = None

    def _source_hold(self) -> SourceHold:
        """One per consumer: it outlives a restart of the fetch loop, as what it holds does."""
        if self._kappa_hold is None:
            gauges = self.app.kappa_source_held

            def on_change(topic: str, held: bool) -> None:
                if topic in gauges:
                    gauges[topic].set(int(held))

            self._kappa_hold = SourceHold(self, self.app.kappa_batch_buffers, on_change)
        return self._kappa_hold

    async def _wait_next_records(self, timeout: float) -> tuple[Any, set[TP] | None]:
        if self.flow_active and not self.app.client_only and not self._get_active_partitions():
            # Nothing to fetch (every source held back, or no partitions assigned: a spare
            # worker). faust would sleep; this polls for nothing instead, as a Java consumer
            # polls with every partition paused: aiokafka counts time outside a poll against
            # max_poll_interval_ms, and leaves the group past it.
            return await self._getmany(active_partitions={NO_PARTITION}, timeout=timeout), set()
        return await super()._wait_next_records(timeout)

    async def _drain_messages(self, fetcher: Any) -> None:  # pragma: no cover - runs in worker
        consumer_stopped = self._stopped.is_set
        fetcher_stopped = fetcher._stopped.is_set
        hold = self._source_hold()
        try:
            while not (consumer_stopped() or fetcher_stopped()):
                hold.release_drained()
                records, active = await self._wait_next_records(
                    HELD_CHECK_S if hold.topics else 1.0
                )
                await asyncio.sleep(0)
                if not records or self.should_stop:
                    continue
                left = await self._take_in(records, active)
                if left:
                    await self._read_again(left)
        except self.consumer_stopped_errors:
            if self.transport.app.should_stop:
                return
            raise
        except asyncio.CancelledError:
            if self.transport.app.should_stop:
                return
            raise

    async def _take_in(
        self, records: Mapping[TP, list[Any]], active: set[TP] | None
    ) -> dict[TP, int]:
        """Buffer one fetch's records, partition by partition. Returns, for each partition
        whose records were left (the flow stopped for a rebalance, or a new generation began,
        before they were taken in), the offset of its first record left: the consumer's
        position is past them, and they must be read again (`_read_again`)."""
        if not self.flow_active:
            return {tp: recs[0].offset for tp, recs in records.items()}
        buffers = self.app.kappa_batch_buffers
        read_offset = self._read_offset
        acks_enabled_for = self.app.topics.acks_enabled_for
        hold = self._source_hold()
        # When each partition last had records come in: faust's livelock check reads it (its
        # stream path sets it per event) and, without it, logs "Stream has not started
        # processing" as an ERROR every 2.5 s for every partition with a backlog once the worker
        # has run `stream_processing_timeout` (300 s), however fast the pipeline goes. A
        # pipeline that stops taking records stops it, and faust says so.
        monitor = self.app.monitor
        inbound = monitor.stream_inbound_time if monitor is not None else {}
        generation = self.app.consumer_generation_id
        left: dict[TP, int] = {}
        fetched_at = monotonic()
        for tp in records:  # reached the worker (and again once buffered, below)
            inbound[tp] = fetched_at
        for tp, recs in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation:
                left[tp] = recs[0].offset
                continue
            if active is not None and tp not in active and tp not in self._buffered_partitions:
                left[tp] = recs[0].offset  # paused (a rebalance) since the fetch began
                continue
            r_offset = read_offset[tp]
            if r_offset is not None and recs[0].offset < r_offset:
                recs = [r for r in recs if r.offset >= r_offset]
                if not recs:
                    continue
            if acks_enabled_for(tp.topic) and (gaps := offset_gaps(r_offset, recs)):
                for start, end in gaps:
                    await self._add_gap(tp, start, end)
                # `_add_gap` yields: a rebalance may have taken the partition (and its
                # buffer) meanwhile, and a reassignment seeks it anew. Records buffered now
                # would be processed for a partition this worker no longer holds.
                if not self.flow_active or self.app.consumer_generation_id != generation:
                    left[tp] = recs[0].offset
                    continue
            buffer = buffers.get(tp.topic)
            if buffer is None:  # faust's path needs ConsumerRecords
                for r in recs:
                    await self.callback(self._to_message(tp, consumer_record(tp, r)))
            else:  # raw records as fetched: the `Record` the pipelines read
                if not await buffer.put_many(tp.partition, recs, hold.wait_s(tp.topic)):
                    hold.hold(tp.topic)
                inbound[tp] = monotonic()  # taken in: a stuck pipeline stops this
            read_offset[tp] = recs[-1].offset
        return left

    async def _read_again(self, left: Mapping[TP, int]) -> None:
        """Fetched records left untaken are read again: faust drops them on the assumption
        that the rebalance under way seeks every partition to its committed offset, but a fetch
        that spanned the rebalance can return them after that seek, before the flow resumes.
        Nothing would then read them until the next rebalance, and a partition whose state
        follows its records would have skipped them for good."""
        thread = self._thread
        rewound = await thread.call_thread(thread.rewind, dict(left))
        if rewound:
            log.info(
                "fetched records left during a rebalance are read again: %s",
                ", ".join(f"{tp.topic}[{tp.partition}] from {left[tp]}" for tp in rewound),
            )


def consumer_idle_s(app: Any) -> float | None:
    """How long (s) the worker's Kafka consumer has gone without a fetch, by aiokafka's own
    measure: the one by which it leaves its group (`max_poll_interval_ms`) and refuses to
    rejoin it. None before the consumer exists."""
    thread = getattr(app.consumer, "_thread", None)
    subscription = getattr(getattr(thread, "_consumer", None), "_subscription", None)
    return None if subscription is None else float(subscription.fetcher_idle_time)


def offset_gaps(read_offset: int | None, recs: Iterable[Any]) -> list[tuple[int, int]]:
    """Offsets missing between fetched records (aborted transactions and their markers, a
    compacted source), as faust's `_add_gap(start, end)` takes them: without them acked,
    faust's commit would stop at the first gap. `read_offset`: faust's for the partition (the
    last offset read, or the offset sought); None on a partition's first fetch from offset 0
    or with no commit, where only gaps between the fetched records count (faust does not
    check the head then)."""
    gaps = []
    prev = read_offset
    for r in recs:
        offset = r.offset
        if prev is not None and offset - prev > 1:
            gaps.append((prev + 1, offset))
        prev = offset
    return gaps


class KappaTransport(Transport):  # type: ignore[misc]
    Conductor = BatchConductor
    Consumer = BatchingConsumer


class KappaApp(faust.App):  # type: ignore[misc]
    """faust.App with the batch-delivering conductor, and what Kappa's parts of the worker
    (`app.worker.create_app` sets them) share through it."""

    kappa_read_committed: bool = False  # exactly_once: the consumer reads committed records
    kappa_fetch_max_wait_ms: int | None = None  # None: faust's own
    kappa_group_instance_id: str | None = None  # static membership (KIP-345); None: dynamic
    kappa_group_fence: GroupFence | None = None  # a static member's: set once it is fenced
    # set: what the fenced stop awaits first (the worker closes its senders: the partitions,
    # and their changelogs, are another process's now)
    kappa_on_fenced: Callable[[], Awaitable[None]] | None = None
    kappa_group_refusal: GroupRefusal  # set once the broker refuses the group for good
    kappa_batch_buffers: dict[str, BatchBuffer]  # physical source topic → its buffer
    kappa_source_held: dict[str, Any]  # physical source topic → its `kappa_source_held` gauge
    kappa_runners: list[PipelineRunner]
    kappa_rebalances_done: int
    kappa_stop_on_error: Callable[[BaseException, str], Awaitable[None]]
    kappa_topics_gone: TopicsCheck | None = None  # set: a commit hanging on a topic checks it
    kappa_partition_owners: PartitionOwners | None = None  # set: the join says who holds what
    # set: the join says which source partitions this worker has local state for
    kappa_local_state: Callable[[], list[Partition]] | None = None
    kappa_join_answers: JoinAnswers  # the coordinator's last answers to the consumer's joins
    kappa_group_wait: GroupWait | None = None  # set: said when it stays out of its group
    kappa_group_check_s: float = 1.0  # how often that is looked at (s)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kappa_batch_buffers = {}
        self.kappa_source_held = {}
        self.kappa_runners = []
        self.kappa_rebalances_done = 0  # ended since start: 0 while not yet in its group
        self.kappa_join_answers = JoinAnswers()
        self.kappa_group_refusal = GroupRefusal()

    def _new_transport(self) -> Transport:
        return KappaTransport(self.conf.broker_consumer, self)

    async def on_start(self) -> None:
        await super().on_start()
        if self.kappa_group_wait is not None:  # from the start: faust's own timers and tasks
            # start only once the worker is in its group
            self.add_future(self._say_when_out_of_group(self.kappa_group_wait))

    async def _say_when_out_of_group(self, wait: GroupWait) -> None:
        while not self.should_stop:
            joined = self.kappa_rebalances_done > 0
            in_group = joined and not self.rebalancing
            said = wait.check(in_group, "rebalancing" if joined else "joining", monotonic())
            if said is not None:
                group_wait_log.log(*said)
            await self.sleep(self.kappa_group_check_s)  # returns at once on stop

    def on_rebalance_end(self) -> None:
        """Every assigned partition counts as started when a rebalance ends.

        faust's livelock check logs "Stream has not started processing" for a partition with
        records waiting and none taken in since the rebalance (which cleared the times). A
        partition whose state is still opening, or whose first records were only just written
        (a pipeline reading another's output), has not stalled. One that then takes in nothing
        for `stream_processing_timeout` is still reported ("has stopped processing").
        """
        super().on_rebalance_end()
        self.kappa_rebalances_done += 1
        monitor = self.monitor
        if monitor is not None and self._consumer is not None:
            now = monotonic()
            for tp in self._consumer.assignment():
                monitor.stream_inbound_time.setdefault(tp, now)


def ack_offsets(consumer: Any, tp: TP, offsets: list[int]) -> None:
    """Tell faust's consumer these offsets are processed, so its commits advance past them.

    The bulk form of `Consumer.ack(message)` (same bookkeeping, same lock) for records that
    never became faust `Message`s. It reaches into faust's private commit state: keep it in
    step with faust-streaming's `Consumer.ack` when upgrading (pinned in pyproject).
    """
    with faust_ack_lock:
        committed = consumer._committed_offset[tp]
        if committed is not None:
            offsets = [o for o in offsets if o >= committed]
        index = consumer._acked_index[tp]
        new = [o for o in offsets if o not in index]
        index.update(new)
        consumer._acked[tp].extend(new)
        consumer._n_acked += len(new)
