"""OwnProducerSender against the embedded broker: one producer, started on first use."""

from __future__ import annotations

import asyncio

import pytest

from app.admin import ensure_topics
from app.batch_producer import OwnProducerSender
from app.runtime import Produce
from app.topic_reader import read_to_end


@pytest.mark.integration
async def test_own_producer_sender_starts_one_producer_on_first_use_and_delivers(
    broker: str, unique: str
) -> None:
    topic = f"own-{unique}"
    await ensure_topics(broker, {topic: (1, {})})
    sender = OwnProducerSender(broker)

    def records(i: int) -> list[Produce]:
        return [Produce(topic, 0, b"k", f"v{i}".encode(), None, [])]

    await asyncio.gather(sender.send(records(0)), sender.send(records(1)))  # concurrent first use
    first = sender._sender
    await sender.send(records(2))
    assert first is not None and sender._sender is first
    await sender.close()
    assert sender._sender is None
    got = (await read_to_end(broker, topic))[0]
    assert sorted(r.value for r in got) == [b"v0", b"v1", b"v2"]
