"""BatchSender without a broker: the order in which a cycle's record batches go out."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import ProducerClosed
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import TopicPartition

from app import batch_producer
from app.batch_producer import BatchSender, OwnProducerSender
from app.runtime import Produce


class _HeldProducer:
    """Record batches are 'sent' but acknowledged only when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, asyncio.Future[None]]] = []
        self.batches: list[tuple[str, Any]] = []
        self._changed = asyncio.Condition()

    async def sent_at_least(self, n: int) -> list[str]:
        """The topics sent to, once at least `n` record batches were sent. The sender sends
        without suspending until it awaits acknowledgements, so this wakes only after that."""
        async with self._changed:
            await self._changed.wait_for(lambda: len(self.sent) >= n)
        return [topic for topic, _ in self.sent]

    def create_batch(self) -> Any:
        return BatchBuilder(1_000_000, 0)

    async def send_batch(self, batch: Any, topic: str, partition: int) -> asyncio.Future[None]:
        ack: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.sent.append((topic, ack))
        self.batches.append((topic, batch))
        async with self._changed:
            self._changed.notify_all()
        return ack

    async def partitions_for(self, topic: str) -> set[int]:
        return {0, 1}


def _cycle() -> list[Produce]:
    return [
        Produce("out", 0, b"k1", b"v", None, []),
        Produce("out", 1, b"k2", b"v", None, []),
        Produce("changelog", 0, b"s", b"v", None, [], atomic=True, after_outputs=True),
        Produce("changelog", 0, b"applied", b"1", None, [], atomic=True, after_outputs=True),
    ]


async def test_the_changelog_goes_out_only_once_the_outputs_are_acknowledged() -> None:
    producer = _HeldProducer()
    sending = asyncio.create_task(BatchSender(producer).send(_cycle()))  # type: ignore[arg-type]
    assert await producer.sent_at_least(2) == ["out", "out"]  # both output partitions, alone
    for _, ack in producer.sent:
        ack.set_result(None)
    assert await producer.sent_at_least(3) == ["out", "out", "changelog"]
    assert not sending.done()
    producer.sent[-1][1].set_result(None)
    await sending


async def test_in_a_transaction_everything_goes_out_at_once() -> None:
    producer = _HeldProducer()
    sender = BatchSender(producer, outputs_first=False)  # type: ignore[arg-type]
    sending = asyncio.create_task(sender.send(_cycle()))
    assert sorted(await producer.sent_at_least(1)) == ["changelog", "out", "out"]
    for _, ack in producer.sent:
        ack.set_result(None)
    await sending


async def test_held_changelog_entries_go_out_with_the_outputs() -> None:
    """Entries of batches whose outputs were acknowledged before need not wait; a partition
    that also has entries of this cycle's batch goes out after the outputs, all in order."""
    producer = _HeldProducer()
    held = [
        Produce("changelog", 1, b"s", b"v0", None, [], atomic=True),
        Produce("changelog", 0, b"s", b"v0", None, [], atomic=True),
    ]
    sending = asyncio.create_task(BatchSender(producer).send([*held, *_cycle()]))  # type: ignore[arg-type]
    assert await producer.sent_at_least(3) == ["changelog", "out", "out"]  # partition 1's
    for _, ack in producer.sent:
        ack.set_result(None)
    assert await producer.sent_at_least(4) == ["changelog", "out", "out", "changelog"]
    assert not sending.done()
    producer.sent[-1][1].set_result(None)
    await sending


async def test_output_batches_are_cut_to_the_topics_message_limit() -> None:
    """`max.message.bytes` limits a whole record batch: copies that each fit must not go out
    together in one that does not. Changelog batches keep the producer's size (atomic)."""
    producer = _HeldProducer()
    copies = [Produce("dlq", 0, b"k", bytes(1000), 1, [("reason", b"x")]) for _ in range(5)]
    entries = [Produce("changelog", 0, b"s", bytes(1000), None, [], atomic=True)] * 3
    sender = BatchSender(producer, output_batch_bytes=2500)  # type: ignore[arg-type]
    sending = asyncio.create_task(sender.send([*copies, *entries]))
    await producer.sent_at_least(4)  # nothing is after_outputs: all at once
    for _, ack in producer.sent:
        ack.set_result(None)
    await sending
    dlq = [batch for topic, batch in producer.batches if topic == "dlq"]
    assert [batch.record_count() for batch in dlq] == [2, 2, 1]
    assert all(batch.size() <= 2500 for batch in dlq)
    (changelog,) = [batch for topic, batch in producer.batches if topic == "changelog"]
    assert changelog.record_count() == 3


async def test_outputs_that_must_land_in_order_go_out_one_record_batch_after_another() -> None:
    """A report's parts (`in_order`): a later part must not land before an earlier one, which
    could fail and be retried after it; other outputs' batches go out at once."""
    producer = _HeldProducer()
    parts = [Produce("report", 0, b"all", bytes(1000), 1, [], in_order=True) for _ in range(3)]
    copies = [Produce("dlq", 0, b"k", bytes(1000), 1, []) for _ in range(3)]
    sender = BatchSender(producer, output_batch_bytes=1500)  # type: ignore[arg-type]
    sending = asyncio.create_task(sender.send([*parts, *copies]))
    assert await producer.sent_at_least(4) == ["dlq", "dlq", "dlq", "report"]
    for expected in (5, 6):
        producer.sent[-1][1].set_result(None)  # the part before is acknowledged: the next
        assert (await producer.sent_at_least(expected))[-1] == "report"
        assert len(producer.sent) == expected and not sending.done()
    for _, ack in producer.sent:
        if not ack.done():
            ack.set_result(None)
    await sending


async def test_a_closed_sender_starts_no_producer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A send after `close` (a drain loop still running during shutdown) fails like a send on a
    stopped producer, instead of starting a producer nobody would stop."""
    started: list[object] = []
    monkeypatch.setattr(batch_producer, "new_batch_producer", lambda *a, **k: started.append(a))
    sender = OwnProducerSender("127.0.0.1:1")  # type: ignore[arg-type]
    await sender.close()
    with pytest.raises(ProducerClosed):
        await sender.send([Produce("t", 0, b"k", b"v", 0, [])])
    assert started == []


async def test_a_sender_closed_at_once_drops_what_its_producer_has_not_sent() -> None:
    """aiokafka's `stop` sends every batch it holds first: a fenced worker's must not go out
    (the partitions and their changelogs are another process's). No broker: nothing is
    started, the accumulator holds the batch as it would behind a request in flight."""
    sender = OwnProducerSender("127.0.0.1:1")  # type: ignore[arg-type]
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    sender._sender = BatchSender(producer)
    batch = producer.create_batch()
    batch.append(key=b"k", value=b"v", timestamp=None)
    batch.close()
    accumulator = producer._message_accumulator
    queued = await accumulator.add_batch(batch, TopicPartition("out", 0), 1.0)
    sender.close_at_once()
    with pytest.raises(ProducerClosed):
        await queued
    assert not accumulator._batches
    with pytest.raises(ProducerClosed):  # and nothing joins it
        await accumulator.add_batch(producer.create_batch(), TopicPartition("out", 0), 1.0)
    with pytest.raises(ProducerClosed):  # nor does the sender take another batch
        await sender.send([Produce("out", 0, b"k", b"v", None, [])])
    await producer.stop()
