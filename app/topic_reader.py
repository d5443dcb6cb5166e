"""Read a topic from the beginning up to its high watermark, correctly on any broker.

The end offset comes from fetch responses (`consumer.highwater`), not ListOffsets: the
embedded broker answers ListOffsets(latest) wrongly for multi-record batches, while the high
watermark in a fetch response is right there and on Apache Kafka alike.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from agents.base import SourceRecord
from app.kafka_clients import Conn, new_consumer

# Bounded reads stop at the high watermark: don't let an empty fetch wait the broker's 500 ms.
BOUNDED_FETCH_WAIT_MS = 20


def bounded_consumer(bootstrap: Conn, **overrides: Any) -> AIOKafkaConsumer:
    """A group-less consumer for reading assigned partitions up to a known end."""
    options: dict[str, Any] = {
        "group_id": None,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": BOUNDED_FETCH_WAIT_MS,
        "max_partition_fetch_bytes": 16 * 1024 * 1024,
        "fetch_max_bytes": 64 * 1024 * 1024,
    }
    return new_consumer(bootstrap, **(options | overrides))


async def assign_from_start(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """Assign every partition of `topic` to a started consumer, positioned at the log start."""
    parts = await topic_partitions(consumer, topic)
    tps = [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    await consumer.seek_to_beginning(*tps)
    return tps


async def read_to_end(
    bootstrap: Conn, topic: str, stall_timeout_s: float = 60.0, max_records: int = 10_000
) -> dict[int, list[ConsumerRecord]]:
    """Every record of `topic`, per partition in offset order, up to the high watermark seen."""
    out: dict[int, list[ConsumerRecord]] = {}
    async with contextlib.aclosing(
        read_chunks(bootstrap, topic, stall_timeout_s, max_records)
    ) as chunks:
        async for partition, records in chunks:
            out.setdefault(partition, []).extend(records)
    return out


async def read_chunks(
    bootstrap: Conn, topic: str, stall_timeout_s: float = 60.0, max_records: int = 10_000
) -> AsyncIterator[tuple[int, list[ConsumerRecord]]]:
    """Every record of `topic` up to the high watermark seen, as (partition, records) chunks,
    each partition's in offset order; every partition is yielded, an empty one with [].

    For reads too large to hold: the caller folds chunks as they come. TimeoutError only when
    the read makes no progress for `stall_timeout_s`, however long the whole read takes.
    """
    consumer = bounded_consumer(bootstrap)
    try:
        await consumer.start()  # inside: stopped even if cancelled while starting
        tps = await assign_from_start(consumer, topic)
        for tp in tps:
            yield tp.partition, []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + stall_timeout_s
        pending = set(tps)
        while pending:
            if loop.time() > deadline:
                raise TimeoutError(
                    f"reading {topic} made no progress for {stall_timeout_s:g}s "
                    f"({len(pending)} partitions short of their end)"
                )
            batches = await consumer.getmany(*pending, timeout_ms=200, max_records=max_records)
            for tp, records in batches.items():
                if records:
                    deadline = loop.time() + stall_timeout_s
                    yield tp.partition, records
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
    finally:
        await consumer.stop()


class TopicMissing(ValueError):
    """A topic a command needs is not on the broker (one-line message)."""


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    """The topic's partitions, refreshing metadata for a while; ValueError if it is missing."""
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise TopicMissing(f"topic {topic} does not exist")


async def read_range(
    bootstrap: Conn, topic: str, partition: int, start: int, end: int, chunk: int = 20_000
) -> AsyncIterator[list[ConsumerRecord]]:
    """Records of one partition with start <= offset < end, in chunks (offset order).

    Starts at the log start if `start` is before it (retention); stops early at the high
    watermark if `end` lies beyond it.
    """
    if end <= start:
        return
    tp = TopicPartition(topic, partition)
    consumer = bounded_consumer(bootstrap)
    try:
        await consumer.start()  # inside: stopped even if cancelled while starting
        consumer.assign([tp])
        first = (await consumer.beginning_offsets([tp]))[tp]
        consumer.seek(tp, max(start, first))
        buf: list[ConsumerRecord] = []
        while True:
            batch = (await consumer.getmany(tp, timeout_ms=500, max_records=chunk)).get(tp, [])
            for r in batch:
                if r.offset >= end:
                    break
                buf.append(r)
            if len(buf) >= chunk:
                yield buf
                buf = []
            pos = await consumer.position(tp)
            hw = consumer.highwater(tp)
            if pos >= end or (hw is not None and pos >= hw):
                break
        if buf:
            yield buf
    finally:
        await consumer.stop()


def to_source_record(r: ConsumerRecord) -> SourceRecord:
    return SourceRecord(
        r.topic, r.partition, r.offset, r.timestamp, r.key, r.value, list(r.headers or ())
    )


async def high_watermarks(bootstrap: Conn, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """partition → high watermark (the offset after the last record) of every partition.

    Taken from fetch responses: ListOffsets(latest) is wrong on the embedded broker whenever the
    last batch held several records; a fetch response's high watermark is right there and on
    Apache Kafka. Bounded replays take their end offsets from here."""
    consumer = bounded_consumer(bootstrap, max_partition_fetch_bytes=1024)
    try:
        await consumer.start()  # inside: stopped even if cancelled while starting
        tps = await assign_from_start(consumer, topic)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(consumer.highwater(tp) is None for tp in tps):
            if loop.time() > deadline:
                raise TimeoutError(f"no fetch response for every partition of {topic}")
            await consumer.getmany(timeout_ms=200, max_records=1)
        return {tp.partition: int(consumer.highwater(tp)) for tp in tps}  # type: ignore[arg-type]
    finally:
        await consumer.stop()
