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


@pytest.mark.integration
async def test_exactly_once_on_a_broker_without_transactions_stops_in_one_line(
    broker: str, unique: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The dev broker answers InitProducerId with UnknownError: retrying never ends (and
    every attempt used to leave a producer's client open)."""
    from app.batch_producer import TransactionalSender
    from app.runtime import SourceCommit
    from app.send_refusals import SendRefused

    stopped = []
    made = []

    def tracking(*args: object, **kwargs: object) -> object:
        producer = new_batch_producer(*args, **kwargs)  # type: ignore[arg-type]
        made.append(producer)
        stop = producer.stop

        async def stop_and_note() -> None:
            stopped.append(producer)
            await stop()

        producer.stop = stop_and_note  # type: ignore[method-assign]
        return producer

    monkeypatch.setattr(batch_producer, "new_batch_producer", tracking)
    sender = TransactionalSender(broker, f"eos-{unique}")
    with pytest.raises(SendRefused) as refused:
        await sender.send([], SourceCommit(f"src-{unique}", 0, 1, f"g-{unique}"))
    assert str(refused.value) == (
        f"the broker did not start a transactional producer for eos-{unique}-0 "
        "(InitProducerId: UnknownError): KAPPA_PROCESSING_GUARANTEE=exactly_once needs a "
        "broker with transactions (Apache Kafka, Redpanda); the embedded dev broker has none"
    )
    assert made and stopped == made
    # aiokafka's own line per attempt, before the one that says it all, is left out
    assert not [r for r in caplog.records if "InitProducerId" in r.getMessage()]
    await sender.close()
