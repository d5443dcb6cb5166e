"""Raw fetched records (replay's read path) carry what aiokafka's ConsumerRecords carry."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition

from app.admin import ensure_topics
from app.kafka_clients import new_producer
from app.raw_records import RAW_RECORDS
from app.topic_reader import bounded_consumer


async def _read_all(broker: str, topic: str, n: int, **options: object) -> list[object]:
    consumer = bounded_consumer(broker, **options)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 3)  # mid-batch: records before the position must not come back
        out: list[object] = []
        while len(out) < n - 3:
            out.extend((await consumer.getmany(tp, timeout_ms=500, max_records=4)).get(tp, []))
        return out
    finally:
        await consumer.stop()


@pytest.mark.integration
@pytest.mark.parametrize("codec", [None, "gzip", "lz4", "snappy", "zstd"])
async def test_raw_records_match_consumer_records_and_other_consumers_are_untouched(
    broker: str, unique: str, codec: str | None
) -> None:
    """Whatever codec a producer (or the topic's `compression.type`) chose: without its
    library installed, a worker stopped on the first such batch, and again on every restart."""
    topic = f"raw-{unique}"
    await ensure_topics(broker, {topic: (1, {})})
    producer = new_producer(broker, linger_ms=50, compression_type=codec)
    await producer.start()
    try:
        futures = [
            await producer.send(
                topic,
                None if i == 5 else f"v{i}".encode(),
                key=None if i == 2 else f"k{i}".encode(),
                partition=0,
                timestamp_ms=1_700_000_000_000 + i,
                headers=[("h", str(i).encode())],
            )
            for i in range(12)
        ]
        await producer.flush()
        assert all(f.done() for f in futures)
    finally:
        await producer.stop()

    plain = await _read_all(broker, topic, 12)
    raw = await _read_all(broker, topic, 12, value_deserializer=RAW_RECORDS)
    assert type(plain[0]).__name__ == "ConsumerRecord"
    assert type(raw[0]).__name__ != "ConsumerRecord"

    def fields(r: object) -> tuple[object, ...]:
        names = ("offset", "timestamp", "key", "value")
        return (*(getattr(r, f) for f in names), tuple(r.headers))  # type: ignore[attr-defined]

    assert [fields(r) for r in raw] == [fields(r) for r in plain]
    assert [r.offset for r in raw] == list(range(3, 12))  # type: ignore[attr-defined]
