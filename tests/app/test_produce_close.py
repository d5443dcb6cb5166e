"""`kappa produce`'s producer close, without a broker: stopped (Ctrl-C, SIGTERM) or ended, it
waits for a broker that does not answer no longer than its own deadline, not aiokafka's
request timeout (40 s)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from app import produce
from app.produce import produce_records

STEP_S = 0.05  # the close's deadline in these tests (`HELD_SEND_ON_STOP_S`)


class _UnansweredProducer:
    """A producer whose sends are never acknowledged unless `answered`, and whose stop never
    returns (aiokafka's, waiting for the requests in flight up to its request timeout)."""

    def __init__(self, answered: bool) -> None:
        self.answered = answered
        self.sent = asyncio.Event()
        self.stop_cancelled = False

    async def start(self) -> None:
        pass

    async def send(self, topic: str, value: bytes, key: bytes | None = None) -> Any:
        self.sent.set()
        acknowledged: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.answered:
            acknowledged.set_result(None)
        return acknowledged

    async def stop(self) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stop_cancelled = True
            raise


@pytest.fixture
def unanswered(monkeypatch: pytest.MonkeyPatch) -> _UnansweredProducer:
    monkeypatch.setattr("app.kafka_runner.HELD_SEND_ON_STOP_S", STEP_S)
    producer = _UnansweredProducer(answered=False)
    monkeypatch.setattr(produce, "new_producer", lambda *a, **k: producer)
    return producer


async def test_a_stopped_produce_does_not_wait_for_its_producer_past_the_deadline(
    unanswered: _UnansweredProducer, caplog: pytest.LogCaptureFixture
) -> None:
    """The records in flight may not have gone (the stop says "up to" how many went)."""
    records = [(b"k", b"{}")] * 3
    task = asyncio.ensure_future(produce_records("unused:9092", "orders", records, progress=False))
    await asyncio.wait_for(unanswered.sent.wait(), 5)
    with caplog.at_level(logging.WARNING, logger="app.kafka_runner"):
        task.cancel()  # Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)  # without the deadline: until the request timeout
    assert unanswered.stop_cancelled
    assert [r.getMessage() for r in caplog.records] == [
        "closing the producer did not end within 0.05s of the stop; cancelled"
    ]


async def test_a_produce_whose_records_all_went_ends_though_its_close_hangs(
    unanswered: _UnansweredProducer, caplog: pytest.LogCaptureFixture
) -> None:
    """Every record was acknowledged: the close has nothing left to deliver."""
    unanswered.answered = True
    with caplog.at_level(logging.WARNING, logger="app.kafka_runner"):
        sent = await asyncio.wait_for(
            produce_records("unused:9092", "orders", [(b"k", b"{}")] * 3, progress=False), 5
        )
    assert sent == 3
    assert unanswered.stop_cancelled
    assert [r.getMessage() for r in caplog.records] == [
        "closing the producer did not end within 0.05s; cancelled"
    ]
