"""Produce a batch of records as one aiokafka record batch per (topic, partition).

aiokafka's `send()` costs a future, a partitioner call and accumulator bookkeeping per record;
building record batches directly (`create_batch`/`send_batch`) pays that once per partition.
Partitioning by key uses aiokafka's default partitioner (murmur2, as the Java client), so keyed
records land where any other Kafka producer would put them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.errors import (
    KafkaError,
    ProducerClosed,
    ProducerFenced,
    UnknownError,
    UnknownTopicOrPartitionError,
)
from aiokafka.partitioner import DefaultPartitioner

from app import metrics
from app.kafka_clients import Conn, new_producer
from app.runtime import PRODUCER_BATCH_BYTES, Produce, Sender, SenderClosed, SourceCommit
from app.send_refusals import SendRefused, refusal
from app.state_guard import TopicsCheck


class KeyPartitioner:
    """aiokafka's default partitioner (murmur2, as the Java client) with its answers kept:
    a live worker sends the same few thousand keys (users, products) every cycle, and the
    pure-Python murmur2 was a visible share of its CPU. Bounded: cleared when it grows past
    `max_keys`. Records without a key are spread at random, as aiokafka does."""

    def __init__(self, max_keys: int = 100_000) -> None:
        self.max_keys = max_keys
        self._default = DefaultPartitioner()
        self._known: dict[tuple[int, bytes], int] = {}

    def __call__(self, key: bytes | None, partitions: list[int]) -> int:
        if key is None:
            return self._default(None, partitions, partitions)  # type: ignore[no-any-return]
        known = self._known
        found = known.get((len(partitions), key))
        if found is None:
            if len(known) >= self.max_keys:
                known.clear()
            found = known[(len(partitions), key)] = self._default(key, partitions, partitions)
        return found


class BatchSender:
    """Sends a cycle's records: outputs (and the changelog entries of batches whose outputs
    were acknowledged before) first and, once the broker acknowledged them, the changelog
    entries marked `after_outputs`. Partitions are acknowledged independently (other leaders,
    or an error on one partition of a request), and a changelog that landed without its
    outputs would let a restore skip a batch whose outputs were never written. Inside a
    transaction (`outputs_first=False`) everything commits together, so one round trip does."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        outputs_first: bool = True,
        output_batch_bytes: int = PRODUCER_BATCH_BYTES,
    ) -> None:
        self.producer = producer
        self.outputs_first = outputs_first
        # The broker's `max.message.bytes` limits a whole record batch, not a record: where an
        # output topic's is below the producer's batch size (`copy_max_bytes`), output batches
        # are cut to it (two DLQ copies that each fit would otherwise be refused together).
        self.output_batch_bytes = min(output_batch_bytes, PRODUCER_BATCH_BYTES)
        self._partitions: dict[str, list[int]] = {}
        self._partitioner = KeyPartitioner()

    async def partitions(self, topic: str) -> list[int]:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = self._partitions[topic] = sorted(await self.producer.partitions_for(topic))
        return parts

    async def send(self, records: Sequence[Produce], commit: SourceCommit | None = None) -> None:
        """Send all records; return once the broker acknowledged every one (raise otherwise)."""
        groups: dict[tuple[str, int], list[Produce]] = {}
        for r in records:
            p = r.partition
            if p is None:
                parts = self._partitions.get(r.topic) or await self.partitions(r.topic)
                p = self._partitioner(r.key, parts)
            groups.setdefault((r.topic, p), []).append(r)
        if self.outputs_first:  # a group's held entries come before its batch's own
            first = {tp: recs for tp, recs in groups.items() if not recs[-1].after_outputs}
            if first and len(first) < len(groups):
                await self._send_groups(first)
                groups = {tp: recs for tp, recs in groups.items() if recs[-1].after_outputs}
        await self._send_groups(groups)

    async def _send_groups(self, groups: dict[tuple[str, int], list[Produce]]) -> None:
        futures = []
        in_order: list[tuple[str, int, list[Any]]] = []
        producer = self.producer
        for (topic, partition), recs in groups.items():
            batches = self._batches(topic, recs)
            if len(batches) > 1 and (recs[0].atomic or recs[0].in_order):
                in_order.append((topic, partition, batches))
                continue
            for batch in batches:
                future = await producer.send_batch(batch, topic, partition=partition)
                future.add_done_callback(_retrieved)  # not awaited if a later one is refused
                futures.append(future)
        for topic, partition, batches in in_order:
            # A changelog batch too big for one record batch: its parts go out one after the
            # other, so the last entry (the applied offset) lands only after all of them. The
            # same for outputs that must land in order (a report's parts).
            for batch in batches:
                await (await producer.send_batch(batch, topic, partition=partition))
        if futures:
            await asyncio.gather(*futures)

    def _batches(self, topic: str, recs: list[Produce]) -> list[Any]:
        """The records as closed record batches, in order, each as full as the producer's batch
        size allows (an output topic's: `output_batch_bytes`)."""
        batch = self.producer.create_batch()
        out = [batch]
        limit = self.output_batch_bytes
        cut = limit < PRODUCER_BATCH_BYTES and not recs[0].atomic
        for r in recs:
            full = cut and batch.record_count() and batch.size() + _record_bytes(r) > limit
            if not full and _append(batch, r):
                continue
            batch.close()
            batch = self.producer.create_batch()
            out.append(batch)
            if not _append(batch, r):
                raise ValueError(f"a record for {topic} is larger than the producer batch size")
        batch.close()
        return out


def new_batch_producer(kafka: Conn, **overrides: Any) -> AIOKafkaProducer:
    """A producer for `BatchSender`: every write acknowledged by all in-sync replicas, batches
    up to the broker's default message size limit."""
    options: dict[str, Any] = {
        "acks": "all",
        "linger_ms": 5,
        "max_batch_size": PRODUCER_BATCH_BYTES,
        "max_request_size": 16 * 1024 * 1024,
    }
    return new_producer(kafka, **(options | overrides))


class OwnProducerSender:
    """A `BatchSender` over its own producer (its own connection), started on first use.

    aiokafka keeps one produce request in flight per connection; a pipeline with its own
    producer never waits behind another pipeline's request."""

    def __init__(self, kafka: Conn, output_batch_bytes: int = PRODUCER_BATCH_BYTES) -> None:
        self.kafka = kafka
        self.output_batch_bytes = output_batch_bytes
        self._sender: BatchSender | None = None
        self._starting = asyncio.Lock()
        self.closed = False

    async def send(self, records: Sequence[Produce], commit: SourceCommit | None = None) -> None:
        if self.closed:  # closing (stopping): its producer may not have stopped yet
            raise ProducerClosed()
        sender = self._sender
        if sender is None:
            async with self._starting:
                if self.closed:  # stopping: a producer started now would never be stopped
                    raise ProducerClosed()
                if self._sender is None:
                    producer = new_batch_producer(self.kafka)
                    await producer.start()
                    if self.closed:  # closed while it started
                        await producer.stop()
                        raise ProducerClosed()
                    self._sender = BatchSender(producer, True, self.output_batch_bytes)
                sender = self._sender
        await sender.send(records, commit)

    async def release(self, partitions: set[int]) -> None:
        """Source partitions revoked: nothing to let go (one producer serves them all)."""

    def close_at_once(self) -> None:
        """Send nothing more, not even what the producer holds unsent (`drop_unsent`);
        `close` stops it."""
        self.closed = True
        if self._sender is not None:
            drop_unsent(self._sender.producer)

    async def close(self) -> None:
        self.closed = True
        if self._sender is not None:
            await self._sender.producer.stop()
            self._sender = None


def drop_unsent(producer: AIOKafkaProducer) -> None:
    """Fail at once, as `ProducerClosed`, the batches `producer` holds but has not sent, and
    every batch given to it from now on; its `stop` would send them first. Only a request
    already on its way still goes out (as a fenced Kafka Streams task closes its producer
    with no wait). Reaches into aiokafka's accumulator (pinned in pyproject)."""
    accumulator = producer._message_accumulator
    accumulator._closed = True  # `add_batch` raises ProducerClosed
    unsent = [batch for batches in accumulator._batches.values() for batch in batches]
    accumulator._batches.clear()
    for batch in unsent:
        batch.failure(ProducerClosed())
        _retrieved(batch._drain_waiter)  # `add_batch` raises it to those waiting, if any


def _retrieved(future: asyncio.Future[Any]) -> None:
    """A done callback: `future`'s error is not logged as never retrieved (the first one of
    a batch's is raised; aiokafka's own waiters may be gone)."""
    if future.done() and not future.cancelled():
        future.exception()


def _record_bytes(r: Produce) -> int:
    """An upper bound of what `r` adds to a record batch: its bytes plus, at most, the length
    (5), attributes (1), timestamp delta (10), offset delta (5), key and value lengths (5 + 5)
    and header count (5) varints, and 5 + 5 per header."""
    size = 36 + len(r.key or b"") + len(r.value or b"")
    for name, value in r.headers:
        size += 10 + len(name.encode()) + len(value or b"")
    return size


def _append(batch: object, r: Produce) -> bool:
    meta = batch.append(  # type: ignore[attr-defined]
        key=r.key, value=r.value, timestamp=r.timestamp_ms, headers=r.headers
    )
    return meta is not None


log = logging.getLogger(__name__)
_SENDER_LOG = logging.getLogger("aiokafka.producer.sender")


def _init_refused(record: logging.LogRecord) -> bool:
    """aiokafka's log line for an InitProducerId answered UnknownError, which is said once,
    in one line, as `SendRefused` (it logs it once per attempt before that)."""
    message = record.getMessage()
    return "InitProducerIdRequest" in message and "UnknownError" in message


@contextlib.contextmanager
def _unlogged(
    logger: logging.Logger, dropped: Callable[[logging.LogRecord], bool]
) -> Iterator[None]:
    """`logger` without the records `dropped` selects, for a while."""

    def keep(record: logging.LogRecord) -> bool:
        return not dropped(record)

    logger.addFilter(keep)
    try:
        yield
    finally:
        logger.removeFilter(keep)


class TransactionalSender:
    """processing_guarantee=exactly_once: a batch's outputs, its changelog entries and its
    source offset commit are one Kafka transaction (read_committed consumers see each output
    once). One transactional producer per source partition, as Kafka Streams' EOS does: its
    transactional id also fences a zombie worker still writing for a partition it lost."""

    def __init__(
        self, kafka: Conn, transactional_prefix: str, output_batch_bytes: int = PRODUCER_BATCH_BYTES
    ) -> None:
        self.kafka = kafka
        self.prefix = transactional_prefix
        self.output_batch_bytes = output_batch_bytes
        self._producers: dict[int, tuple[AIOKafkaProducer, BatchSender]] = {}
        self.closed = False

    async def _for(self, partition: int) -> tuple[AIOKafkaProducer, BatchSender]:
        found = self._producers.get(partition)
        if found is None:
            if self.closed:  # stopping: a producer started now would never be stopped
                raise ProducerClosed()
            producer = new_batch_producer(
                self.kafka, transactional_id=f"{self.prefix}-{partition}", enable_idempotence=True
            )
            try:
                with _unlogged(_SENDER_LOG, _init_refused):
                    await producer.start()  # InitProducerId: the broker's transaction coordinator
            except BaseException as e:
                await producer.stop()  # a producer that failed to start still holds a client
                if isinstance(e, UnknownError):
                    raise SendRefused(
                        f"the broker did not start a transactional producer for "
                        f"{self.prefix}-{partition} (InitProducerId: UnknownError): "
                        "KAPPA_PROCESSING_GUARANTEE=exactly_once needs a broker with "
                        "transactions (Apache Kafka, Redpanda); the embedded dev broker has none"
                    ) from e
                raise
            sender = BatchSender(producer, False, self.output_batch_bytes)
            found = self._producers[partition] = (producer, sender)
        return found

    async def fence(self, partition: int) -> None:
        """Initialise the partition's transactional producer now: InitProducerId fences a
        previous owner still writing for it and completes or aborts its open transaction, so
        a restore that follows reads a changelog no zombie can add to (as Kafka Streams does
        when it creates a task). A refusal retrying cannot fix (no ACL on the transactional
        id) is said in one line, as when a send is refused; other errors are the caller's to
        retry."""
        try:
            await self._for(partition)
        except (KafkaError, OSError, TimeoutError) as e:
            refused = refusal(e, [f"transactional id {self.prefix}-{partition}"])
            if refused is not None:
                raise refused from e
            raise

    async def send(self, records: Sequence[Produce], commit: SourceCommit) -> None:
        if self.closed:  # closing (stopping): its producers may not have stopped yet
            raise ProducerClosed()
        producer, sender = await self._for(commit.partition)
        async with producer.transaction():  # aborted if anything below raises
            await sender.send(records)
            await producer.send_offsets_to_transaction(
                {TopicPartition(commit.topic, commit.partition): commit.offset}, commit.group
            )

    async def release(self, partitions: set[int]) -> None:
        """Stop the producers of revoked source partitions. The worker that takes one over
        fences its transactional id, so a producer kept here would be fenced if the partition
        came back, and the worker would stop as a zombie; a new one is initialised instead."""
        for partition in partitions:
            found = self._producers.pop(partition, None)
            if found is not None:
                await found[0].stop()

    def close_at_once(self) -> None:
        """Send nothing more, not even what the producers hold unsent (`drop_unsent`);
        `close` stops them."""
        self.closed = True
        for producer, _ in self._producers.values():
            drop_unsent(producer)

    async def close(self) -> None:
        self.closed = True
        for producer, _ in self._producers.values():
            await producer.stop()
        self._producers.clear()


def retrying(
    send_once: Sender,
    label: tuple[str, str],
    max_backoff_s: float = 5.0,
    topics_gone: TopicsCheck | None = None,
    closed: Callable[[], bool] = lambda: False,
) -> Sender:
    """A sender that retries a whole batch with backoff until the broker acknowledges it.

    Re-sending records that did land is safe: outputs are deterministic (consumers upsert by key
    and window) and the state is committed only after success. Only broker and network
    failures are retried: a fenced transactional producer (another instance took over) is a
    zombie and must stop, a write the broker refuses for good (`send_refusals`) stops with one
    line, and any other exception is a bug that retrying would hide. A send to a topic the
    broker does not know is checked with `topics_gone`: a topic deleted under the worker (its
    version dropped elsewhere) stops it, where a broker that is catching up is retried. A
    send that failed because the sender was `closed()` (stopping) raises `SenderClosed`.
    """

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        delay = 0.1
        while True:
            try:
                await send_once(records, commit)
                return
            except asyncio.CancelledError:
                raise
            except ProducerFenced:
                raise
            except (KafkaError, OSError, TimeoutError) as e:
                if isinstance(e, ProducerClosed) and closed():
                    raise SenderClosed("the sender was closed (stopping)") from e
                refused = refusal(e, (r.topic for r in records))
                if refused is not None:
                    raise refused from e
                if topics_gone is not None and isinstance(e, UnknownTopicOrPartitionError):
                    await topics_gone({r.topic for r in records})
                metrics.SEND_RETRIES.labels(*label).inc()
                log.warning(
                    "produce failed (%s: %s); retrying in %.1fs", type(e).__name__, e, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, max_backoff_s)

    return send
