"""Kappa's clients never create a topic by naming it: a sink or worker still reading a dropped
version, or a mistyped topic, must not leave an empty topic with the broker's defaults behind
(the embedded broker, like Apache Kafka by default, creates topics a metadata request names
unless the request says not to)."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.errors import UnknownTopicOrPartitionError

from app.admin import existing_topics
from app.kafka_clients import new_admin, new_consumer, new_producer

pytestmark = pytest.mark.integration


async def test_a_consumer_asking_for_a_missing_topic_does_not_create_it(
    broker: str, unique: str
) -> None:
    topic = f"missing-{unique}"
    consumer = new_consumer(broker)
    await consumer.start()
    try:
        consumer._client.add_topic(topic)
        await consumer._client.force_metadata_update()
        assert consumer.partitions_for_topic(topic) is None
    finally:
        await consumer.stop()
    assert topic not in await existing_topics(broker)


async def test_a_producer_sending_to_a_missing_topic_fails_without_creating_it(
    broker: str, unique: str
) -> None:
    topic = f"missing-{unique}"
    producer = new_producer(broker, request_timeout_ms=1_000)
    await producer.start()
    try:
        with pytest.raises(UnknownTopicOrPartitionError):
            await asyncio.wait_for(producer.send_and_wait(topic, b"x"), 30)
    finally:
        await producer.stop()
    assert topic not in await existing_topics(broker)


async def test_an_admin_describing_a_missing_topic_does_not_create_it(
    broker: str, unique: str
) -> None:
    topic = f"missing-{unique}"
    admin = new_admin(broker)
    await admin.start()
    try:
        described = await admin.describe_topics([topic])
    finally:
        await admin.close()
    assert [t["error_code"] for t in described] == [UnknownTopicOrPartitionError.errno]
    assert topic not in await existing_topics(broker)
