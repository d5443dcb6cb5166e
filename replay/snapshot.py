"""End offsets for a bounded replay, taken from fetch responses.

ListOffsets(latest) is wrong on the embedded broker whenever the last batch held several
records; the high watermark a fetch response carries is right there and on Apache Kafka.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.topic_reader import topic_partitions


async def high_watermarks(bootstrap: str, topic: str, timeout_s: float = 30.0) -> dict[int, int]:
    """partition → high watermark (the offset after the last record) of every partition."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=1024,
    )
    await consumer.start()
    try:
        parts = await topic_partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while any(consumer.highwater(tp) is None for tp in tps):
            if loop.time() > deadline:
                raise TimeoutError(f"no fetch response for every partition of {topic}")
            await consumer.getmany(timeout_ms=200, max_records=1)
        return {tp.partition: int(consumer.highwater(tp)) for tp in tps}  # type: ignore[arg-type]
    finally:
        await consumer.stop()
