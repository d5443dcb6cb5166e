"""OwnProducerSender against the embedded broker: one producer, started on first use."""

from __future__ import annotations

import asyncio

import pytest

from app import batch_producer
from app.admin import ensure_topics
from app.batch_producer import OwnProducerSender, new_batch_producer
from app.runtime import Produce
from app.topic_reader import read_to_end


@pytest.mark.integration
async def test_own_producer_sender_starts_one_producer_on_first_use_and_delivers(
    broker: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = []

    def counting(*args: object, **kwargs: object) -> object:
        made.append(1)
        return new_batch_producer(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(batch_producer, "new_batch_producer", counting)
    topic = f"own-{unique}"
    await ensure_topics(broker, {topic: (1, {})})
    sender = OwnProducerSender(broker)

    def records(i: int) -> list[Produce]:
        return [Produce(topic, 0, b"k", f"v{i}".encode(), None, [])]

    await asyncio.gather(sender.send(records(0)), sender.send(records(1)))  # concurrent first use
    await sender.send(records(2))
    assert len(made) == 1
    await sender.close()
    assert sender._sender is None
    got = (await read_to_end(broker, topic))[0]
    assert sorted(r.value for r in got) == [b"v0", b"v1", b"v2"]
