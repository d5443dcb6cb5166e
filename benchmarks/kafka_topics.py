"""The few topic operations the harness needs, on aiokafka directly.

Kept here rather than borrowed from the engine, whose internals are being reworked: the harness
must measure whatever engine it finds, not break with it.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError, for_code


async def create_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Create `topic` with `partitions` partitions (brokers auto-create with their own count)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        try:
            response = await admin.create_topics([NewTopic(topic, partitions, 1)])
        except TopicAlreadyExistsError:
            return
        for err in response.topic_errors:
            if err[1] and for_code(err[1]) is not TopicAlreadyExistsError:
                raise RuntimeError(f"creating {topic} failed: {for_code(err[1]).__name__}")
    finally:
        await admin.close()


async def topic_partitions(consumer: AIOKafkaConsumer, topic: str) -> list[int]:
    """The topic's partitions, refreshing metadata for up to 5 s; ValueError if it is missing."""
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return sorted(parts)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise ValueError(f"topic {topic} does not exist")


async def high_watermarks(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """partition → high watermark, from fetch responses (the dev broker's ListOffsets(latest)
    is wrong for multi-record batches)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1024,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in await topic_partitions(consumer, topic)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while any(consumer.highwater(tp) is None for tp in tps):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"no fetch response for every partition of {topic}")
            await consumer.getmany(timeout_ms=200, max_records=1)
        return {tp.partition: int(consumer.highwater(tp) or 0) for tp in tps}
    finally:
        await consumer.stop()
