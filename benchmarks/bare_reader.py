"""A bare consumer of one topic: no group, every partition assigned, from the beginning.

What the ceiling, the latency observers and the relay read with, so that they differ only in
what they do with the records.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from app.topic_reader import topic_partitions


async def read_from_beginning(bootstrap: str, topic: str, **options: Any) -> AIOKafkaConsumer:
    """A started consumer positioned at the start of every partition of `topic`; `options`
    are aiokafka consumer settings (fetch sizes, fetch wait). The caller stops it."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        **options,
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in sorted(await topic_partitions(consumer, topic))]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
    except BaseException:
        await consumer.stop()
        raise
    return consumer
