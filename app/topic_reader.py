"""Read a topic from the beginning up to its high watermark, correctly on any broker.

The end offset comes from fetch responses (`consumer.highwater`), not ListOffsets: the
embedded broker answers ListOffsets(latest) wrongly for multi-record batches, while the high
watermark in a fetch response is right there and on Apache Kafka alike.
"""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_to_end(
    bootstrap: str, topic: str, timeout_s: float = 60.0, max_records: int = 10_000
) -> dict[int, list[ConsumerRecord]]:
    """Every record of `topic`, per partition in offset order, up to the high watermark seen."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=16 * 1024 * 1024,
        fetch_max_bytes=64 * 1024 * 1024,
    )
    await consumer.start()
    try:
        parts = await _partitions(consumer, topic)
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        out: dict[int, list[ConsumerRecord]] = {tp.partition: [] for tp in tps}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        pending = set(tps)
        while pending:
            if loop.time() > deadline:
                raise TimeoutError(f"reading {topic} did not reach its end in {timeout_s}s")
            batches = await consumer.getmany(*pending, timeout_ms=200, max_records=max_records)
            for tp, records in batches.items():
                out[tp.partition].extend(records)
            for tp in list(pending):
                hw = consumer.highwater(tp)
                if hw is not None and await consumer.position(tp) >= hw:
                    pending.discard(tp)
        return out
    finally:
        await consumer.stop()


async def _partitions(consumer: AIOKafkaConsumer, topic: str) -> set[int]:
    for _ in range(50):
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return set(parts)
        await consumer._client.force_metadata_update()
        await asyncio.sleep(0.1)
    raise ValueError(f"topic {topic} does not exist")
