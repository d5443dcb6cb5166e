"""A stopping consumer leaves its group in the group's first generation too, which the dev
broker numbers 0 (aiokafka leaves only from 1, Apache Kafka's first): otherwise the next
worker's join waits for the stopped one's session to time out."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from app.group_leave import leave_on_close

pytestmark = pytest.mark.integration


async def _members(broker: str, group: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        [description] = await admin.describe_consumer_groups([group])
        return len(description.groups[0][5])  # error, id, state, type, protocol, members
    finally:
        await admin.close()


async def _joined(broker: str, topic: str, group: str, **options: object) -> AIOKafkaConsumer:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=broker, group_id=group, **options)
    await consumer.start()
    while not consumer.assignment():
        await asyncio.sleep(0.05)
    return consumer


async def _topic(broker: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=broker)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()


async def test_a_consumer_stopped_in_the_first_generation_leaves_its_group(
    broker: str, unique: str
) -> None:
    topic, group = f"{unique}.t", f"{unique}.g"
    await _topic(broker, topic)
    consumer = await _joined(broker, topic, group)
    assert consumer._coordinator.generation == 0  # the dev broker's first generation
    leave_on_close(consumer)
    await consumer.stop()
    assert await _members(broker, group) == 0  # aiokafka alone: 1, until its session ends


async def test_a_static_member_stopped_stays_in_its_group_for_its_restart(
    broker: str, unique: str
) -> None:
    """`KAPPA_GROUP_INSTANCE_ID`: the broker keeps a static member's partitions until its
    session times out; a LeaveGroup would rebalance the group at once."""
    topic, group = f"{unique}.t", f"{unique}.g"
    await _topic(broker, topic)
    # Kafka's shortest session: the dev broker holds a join for half of it
    options = {"group_instance_id": f"{unique}-0", "session_timeout_ms": 6000}
    consumer = await _joined(broker, topic, group, **options)
    leave_on_close(consumer)
    await consumer.stop()
    assert await _members(broker, group) == 1
