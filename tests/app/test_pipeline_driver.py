"""PipelineDriver without a broker: a worker that may have lost its partitions writes nothing
for them (a late changelog entry would land after the next owner's)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from aiokafka.errors import (
    KafkaConnectionError,
    ProducerFenced,
    TopicAuthorizationFailedError,
    UnsupportedCodecError,
)

from app.batch_buffer import BatchBuffer
from app.pipeline_driver import PipelineDriver, revoke_all
from app.runtime import SenderClosed, SourceEndBehind
from app.send_refusals import ReadRefused, SendRefused
from app.state_guard import BrokerDataLost
from app.topic_reader import TopicMissing
from tables.partition_state import StateError
from tests.support.fakes import ManualClock, until


@dataclass
class _Record:
    partition: int
    offset: int


class _Runner:
    """The runner's side of the driver: what was handled, handed over and closed. A partition
    whose state is not open blocks in `check_log_kept` until `restored` is set (a restore)."""

    def __init__(self, opened: set[int]) -> None:
        self.pipeline = type("P", (), {"name": "orders"})()
        self.opened = set(opened)
        self.restored = asyncio.Event()
        self.restoring = asyncio.Event()
        self.handled: list[dict[int, list[int]]] = []
        self.handed_over: list[set[int]] = []
        self.closed: list[int] = []
        self.hand_over_gate = asyncio.Event()
        self.hand_over_gate.set()
        self.handing_over = asyncio.Event()

    async def check_log_kept(self, partition: int, high_watermark: int | None) -> None:
        await self.state(partition)

    async def state(self, partition: int) -> None:
        if partition not in self.opened:
            self.restoring.set()
            await self.restored.wait()
            self.opened.add(partition)

    def open_state(self, partition: int) -> object | None:
        return object() if partition in self.opened else None

    async def handle_many(self, batches: dict[int, Sequence[_Record]]) -> None:
        self.handled.append({p: [r.offset for r in recs] for p, recs in batches.items()})

    async def hand_over(self, partitions: set[int]) -> None:
        self.handing_over.set()
        await self.hand_over_gate.wait()
        self.handed_over.append(set(partitions))
        for p in partitions:
            self.close_partition(p)

    def close_partition(self, partition: int) -> None:
        self.opened.discard(partition)
        self.closed.append(partition)

    def send_held_soon(self) -> None:
        pass

    def stop_sending_held(self) -> None:
        pass


class _StuckRunner(_Runner):
    """A runner whose batch send never ends (retried against a broker that does not answer),
    until it is cancelled."""

    def __init__(self, opened: set[int]) -> None:
        super().__init__(opened)
        self.sending = asyncio.Event()
        self.cancelled: list[bool] = []

    async def handle_many(self, batches: dict[int, Sequence[_Record]]) -> None:
        self.sending.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.cancelled.append(True)
            raise


class _Consumer:
    def __init__(self, assigned: set[int]) -> None:
        self.acked: dict[int, list[int]] = {}
        self._assigned = assigned

    def highwater(self, partition: int) -> int | None:
        return None

    def assigned(self) -> set[int]:
        return self._assigned

    def ack(self, partition: int, offsets: list[int]) -> None:
        self.acked.setdefault(partition, []).extend(offsets)


DEADLINE_S = 3600.0  # `_driver`'s revoke deadline


def _driver(runner: _Runner, consumer: _Consumer, clock: ManualClock) -> tuple[PipelineDriver, Any]:
    released: list[set[int]] = []

    async def release(parts: set[int]) -> None:
        released.append(parts)

    async def crash(exc: BaseException, line: str = "") -> None:
        raise AssertionError(f"crashed: {exc!r}")

    driver = PipelineDriver(
        runner,  # type: ignore[arg-type]
        BatchBuffer(100, 10),
        consumer,
        linger_s=0,
        # Long, as the fake clock decides when it passes; the driver also waits for real
        # with what is left, which a stalled CI machine must never run out of.
        revoke_deadline_s=DEADLINE_S,
        release=release,
        fail=crash,
        crash=crash,
        should_stop=lambda: False,
        clock=clock,
    )
    return driver, released


def _stopping_driver(
    runner: _Runner, revoke_deadline_s: float = 5.0, stop_deadline_s: float = DEADLINE_S
) -> tuple[PipelineDriver, list[tuple[str, BaseException]]]:
    """A driver of partition 0 that records how it was stopped: ("fail" or "crash", error). Its
    drain loop ends once it was stopped or has handled a batch. `stop_deadline_s`: how long
    the batch under way at a stop (`finish_batch`) may take."""
    stops: list[tuple[str, BaseException]] = []

    async def fail(exc: BaseException, line: str) -> None:
        stops.append(("fail", exc))

    async def crash(exc: BaseException) -> None:
        stops.append(("crash", exc))

    driver = PipelineDriver(
        runner,  # type: ignore[arg-type]
        BatchBuffer(100, 10),
        _Consumer({0}),
        linger_s=0,
        revoke_deadline_s=revoke_deadline_s,
        release=lambda parts: asyncio.sleep(0),
        fail=fail,
        crash=crash,
        should_stop=lambda: bool(stops or runner.handled),
        stop_deadline_s=stop_deadline_s,
    )
    return driver, stops


async def _buffer(driver: PipelineDriver, partition: int, *offsets: int) -> None:
    for offset in offsets:
        await driver.buffer.put(_Record(partition, offset))  # type: ignore[arg-type]


async def test_a_batch_whose_restore_outlasts_the_start_of_a_revoke_is_not_sent() -> None:
    runner, consumer, clock = _Runner(opened={0}), _Consumer({0, 1}), ManualClock()
    driver, released = _driver(runner, consumer, clock)
    await _buffer(driver, 0, 10, 11)
    await _buffer(driver, 1, 5)  # p1 moved here: its state must be restored first
    draining = asyncio.create_task(driver.drain())
    await runner.restoring.wait()
    revoking = asyncio.create_task(driver.on_revoked({0, 1}))
    await asyncio.sleep(0)  # the revoke is now waiting for the batch to finish
    await _buffer(driver, 0, 12, 13)  # fetched meanwhile
    runner.restored.set()
    await revoking
    draining.cancel()

    assert runner.handled == []  # nothing sent for partitions the group may have moved on
    assert consumer.acked == {}  # so the next owner reads them again
    # Closed, so 12-13 were not applied past the skipped 10-11 (a reopen reads the gap).
    assert {0, 1} <= set(runner.closed)
    assert runner.handed_over == [{0, 1}] and released == [{0, 1}]


async def test_a_revoke_past_its_deadline_lets_the_partitions_go_without_sending() -> None:
    runner, consumer, clock = _Runner(opened={0}), _Consumer({0, 1}), ManualClock()
    driver, released = _driver(runner, consumer, clock)
    await _buffer(driver, 1, 5)
    draining = asyncio.create_task(driver.drain())
    await runner.restoring.wait()  # a restore holds the pipeline
    revoking = asyncio.create_task(driver.on_revoked({0, 1}))
    await asyncio.sleep(0)
    clock.now = DEADLINE_S + 1  # the restore took longer than the deadline
    runner.restored.set()
    await revoking
    draining.cancel()

    assert runner.handled == [] and runner.handed_over == []
    assert set(runner.closed) == {0, 1} and released == [{0, 1}]


async def test_a_revoke_sends_what_was_delivered_for_open_partitions_only() -> None:
    """Records of a partition not opened yet are left to the next owner: opening it could
    mean a restore, for a partition that is going away."""
    runner, consumer, clock = _Runner(opened={0}), _Consumer({0, 1}), ManualClock()
    driver, released = _driver(runner, consumer, clock)
    await _buffer(driver, 0, 10, 11)
    await _buffer(driver, 1, 5)
    await asyncio.wait_for(driver.on_revoked({0, 1}), 60)  # a restore would never end here

    assert runner.handled == [{0: [10, 11]}]
    assert consumer.acked == {0: [10, 11]}
    assert not runner.restoring.is_set()
    assert runner.handed_over == [{0, 1}] and released == [{0, 1}]


async def test_assigned_partitions_are_opened_before_their_first_record() -> None:
    runner, consumer, clock = _Runner(opened=set()), _Consumer({0, 1}), ManualClock()
    runner.restored.set()
    driver, _ = _driver(runner, consumer, clock)
    driver.on_assigned({0, 1, 2})  # 2: no longer assigned by the time it runs
    await asyncio.gather(*driver._opening)
    assert runner.opened == {0, 1}


@pytest.mark.parametrize(
    ("error", "refused"),
    [(KafkaConnectionError(), False), (TopicAuthorizationFailedError(), True)],
)
async def test_an_assigned_partition_that_failed_to_open_is_tried_again_past_the_others(
    error: BaseException, refused: bool
) -> None:
    """Left for its first record, a quiet partition stayed closed (and the worker not ready)
    for as long as none came; the partitions after it in the same open stayed closed too."""
    attempts: list[int] = []

    class _FlakyRunner(_Runner):
        async def state(self, partition: int) -> None:
            attempts.append(partition)
            if partition == 1 and attempts.count(1) <= 2:
                raise error
            await super().state(partition)

    runner = _FlakyRunner(opened=set())
    runner.restored.set()
    driver, stops = _stopping_driver(runner)
    driver.consumer = _Consumer({0, 1, 2})
    driver.open_retry_s = (0.0, 0.0)
    driver.on_assigned({0, 1, 2})
    await asyncio.wait_for(asyncio.gather(*driver._opening), 60)
    if refused:  # retrying cannot fix it: stopped in one line, at the first attempt
        ((way, stop),) = stops
        assert way == "fail" and isinstance(stop, ReadRefused)
        assert attempts == [0, 1]
    else:
        assert stops == [] and runner.opened == {0, 1, 2}
        assert attempts == [0, 1, 2, 1, 1]


async def test_an_open_scheduled_before_a_revoke_does_nothing() -> None:
    """It would reopen partitions the group may have moved: a later assignment reopens them,
    checking the changelog again."""
    runner, consumer, clock = _Runner(opened=set()), _Consumer({0}), ManualClock()
    runner.restored.set()
    driver, _ = _driver(runner, consumer, clock)
    driver.on_assigned({0})
    await driver.on_revoked({0})  # before the open ran; the assignment still lists 0
    await asyncio.gather(*driver._opening)
    assert runner.opened == set()


async def test_a_revoke_cancels_a_restore_started_for_an_assignment() -> None:
    runner, consumer, clock = _Runner(opened=set()), _Consumer({1}), ManualClock()
    driver, released = _driver(runner, consumer, clock)
    driver.on_assigned({1})
    await runner.restoring.wait()  # never ends by itself
    await asyncio.wait_for(driver.on_revoked({1}), 60)
    assert runner.opened == set() and released == [{1}]


async def test_a_workers_pipelines_are_revoked_at_once() -> None:
    """One after the other, a pipeline still draining would keep sending for partitions being
    revoked while the first hands its over."""
    first, second = _Runner(opened={0}), _Runner(opened={0})
    first.hand_over_gate.clear()
    drivers = [_driver(r, _Consumer({0}), ManualClock())[0] for r in (first, second)]
    revoking = asyncio.create_task(revoke_all(drivers, [{0}, {0}]))
    await first.handing_over.wait()
    assert drivers[1].rebalances == 1  # under way while the first still hands over
    first.hand_over_gate.set()
    await revoking
    assert first.handed_over == second.handed_over == [{0}]


@pytest.mark.parametrize(
    ("error", "way"),
    [
        (BrokerDataLost("the broker lost its data"), "fail"),
        (StateError("state from another version"), "fail"),
        (ProducerFenced(), "fail"),
        (SendRefused("the broker refused writes to orders.dlq"), "fail"),
        # a changelog deleted under the worker, or a dev broker restarted: was a traceback
        (TopicMissing("topic kappa-v1-orders-changelog does not exist"), "fail"),
        (RuntimeError("a bug"), "crash"),
    ],
)
async def test_errors_said_in_one_line_stop_the_worker_without_a_crash(
    error: BaseException, way: str
) -> None:
    """An error the worker explains in one line stops it in order (`fail`); only a bug goes
    through `crash`, whose log carries the traceback."""

    class _FailingRunner(_Runner):
        async def handle_many(self, batches: dict[int, Sequence[_Record]]) -> None:
            raise error

    driver, stops = _stopping_driver(_FailingRunner(opened={0}))
    await _buffer(driver, 0, 1)
    await asyncio.wait_for(driver.drain(), 5)
    assert stops == [(way, error)]


@pytest.mark.parametrize(
    ("error", "refused"),
    [
        (UnsupportedCodecError("Libraries for lz4 compression codec not found"), True),
        (TopicAuthorizationFailedError(), True),
        (KafkaConnectionError(), False),  # broker trouble: waited out
    ],
)
async def test_a_read_retrying_cannot_fix_stops_the_worker_in_one_line(
    error: BaseException, refused: bool
) -> None:
    """It was retried forever as broker trouble, with /health saying ok."""
    calls = 0

    class _ReadFailingRunner(_Runner):
        async def handle_many(self, batches: dict[int, Sequence[_Record]]) -> None:
            nonlocal calls
            calls += 1
            if calls == 1:
                raise error
            await super().handle_many(batches)

    runner = _ReadFailingRunner(opened={0})
    driver, stops = _stopping_driver(runner)
    await _buffer(driver, 0, 1)
    await asyncio.wait_for(driver.drain(), 5)
    if refused:
        ((way, stop),) = stops
        assert way == "fail" and isinstance(stop, ReadRefused)
        assert str(stop).startswith(f"orders: reading failed: {type(error).__name__}")
        assert runner.handled == []
    else:
        assert stops == [] and runner.handled == [{0: [1]}]


async def test_a_hand_over_that_cannot_be_sent_stops_the_worker_in_one_line() -> None:
    """It raised out of the revoke into faust's rebalance callback instead."""
    refused = SendRefused("the broker refused writes to orders.revenue-1m")

    class _RefusingRunner(_Runner):
        async def handle_many(self, batches: dict[int, Sequence[_Record]]) -> None:
            raise refused

    driver, stops = _stopping_driver(_RefusingRunner(opened={0}))
    await _buffer(driver, 0, 1)
    await asyncio.wait_for(driver.on_revoked({0}), 5)
    assert stops == [("fail", refused)]
    assert not driver.lock.locked()


async def test_a_batch_or_hand_over_the_closed_sender_failed_ends_quietly(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker stops and has closed its senders: the batch in progress is left to be read
    again, and a revoke lets its partitions go unsent, with no error, crash or warning."""

    class _ClosedRunner(_Runner):
        async def handle_many(self, batches: dict[int, Sequence[_Record]]) -> None:
            raise SenderClosed("the sender was closed (stopping)")

    runner = _ClosedRunner(opened={0})
    driver, stops = _stopping_driver(runner)
    with caplog.at_level(logging.WARNING):
        await _buffer(driver, 0, 1)
        await asyncio.wait_for(driver.drain(), 5)  # ends: nothing can send anymore
        await _buffer(driver, 0, 2)
        await asyncio.wait_for(driver.on_revoked({0}), 5)
    assert stops == [] and caplog.records == []
    assert driver.consumer.acked == {}  # type: ignore[attr-defined]
    assert 0 in runner.closed and runner.handed_over == []
    assert not driver.lock.locked()


async def test_a_revoke_past_its_deadline_abandons_a_batch_still_being_sent() -> None:
    """The revoke waited for the batch in progress however long its send was retried, and
    that send (with the previous batch's changelog entries) landed after the next owner's."""
    runner = _StuckRunner(opened={0})
    sending, cancelled = runner.sending, runner.cancelled
    driver, stops = _stopping_driver(runner, revoke_deadline_s=0.2)
    drain = asyncio.ensure_future(driver.drain())
    try:
        await _buffer(driver, 0, 1)
        await asyncio.wait_for(sending.wait(), 5)
        await asyncio.wait_for(driver.on_revoked({0}), 5)
        assert cancelled == [True] and stops == []
        assert 0 in runner.closed and runner.handed_over == []
        assert driver.consumer.acked == {}  # type: ignore[attr-defined]
        assert not drain.done()  # the worker goes on with its other partitions
    finally:
        drain.cancel()


async def test_a_source_end_behind_the_state_is_retried_not_a_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new partition leader's older end (`SourceEndBehind`) is waited out like broker
    trouble; the batch goes through once the end has caught up."""
    looks = 0

    class _BehindOnceRunner(_Runner):
        async def check_log_kept(self, partition: int, high_watermark: int | None) -> None:
            nonlocal looks
            looks += 1
            if looks == 1:
                raise SourceEndBehind("orders[0]: the broker's log ends at offset 3 but ...")

    runner = _BehindOnceRunner(opened={0})
    driver, stops = _stopping_driver(runner)
    await _buffer(driver, 0, 5)
    with caplog.at_level(logging.WARNING, logger="app.pipeline_driver"):
        await asyncio.wait_for(driver.drain(), 5)
    assert stops == [] and runner.handled == [{0: [5]}] and looks == 2
    assert "waiting for the broker to catch up" in caplog.text


async def test_a_stop_waits_for_the_batch_under_way_then_ends_the_drain_loop() -> None:
    """Before the worker's senders close: a batch whose outputs are on their way is finished
    (else it is read again on restart, its copies written twice)."""
    sending, acknowledged = asyncio.Event(), asyncio.Event()

    class _SendingRunner(_Runner):
        async def handle_many(self, batches: dict[int, Sequence[_Record]]) -> None:
            sending.set()
            await acknowledged.wait()
            await super().handle_many(batches)

    runner = _SendingRunner(opened={0})
    driver, stops = _stopping_driver(runner)
    await driver.finish_batch()  # no drain loop yet: nothing to wait for
    drain = asyncio.ensure_future(driver.drain())
    await _buffer(driver, 0, 1)
    await asyncio.wait_for(sending.wait(), 5)
    acked_at_the_stops_end: list[dict[int, list[int]]] = []

    async def stop() -> None:
        await driver.finish_batch()
        acked_at_the_stops_end.append(dict(driver.consumer.acked))  # type: ignore[attr-defined]

    stopping = asyncio.ensure_future(stop())
    await until(lambda: drain.cancelling() > 0)  # the stop reached the drain loop mid-batch
    acknowledged.set()
    await asyncio.wait_for(stopping, 5)
    assert acked_at_the_stops_end == [{0: [1]}]  # it returned once the batch was acknowledged
    assert runner.handled == [{0: [1]}] and stops == []
    assert drain.cancelled()  # ended by the stop, not by its own `should_stop`


async def test_a_stop_cancels_the_batch_under_way_past_its_deadline(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """As a replay's stop does (`finish_on_stop`): a batch that cannot finish (a broker that
    does not answer) is cancelled, not acknowledged, its state not committed, and read again
    on restart. Left running, it met the senders closing under it; the stop said it in one
    line, with no traceback."""
    runner = _StuckRunner(opened={0})
    sending, cancelled = runner.sending, runner.cancelled
    driver, stops = _stopping_driver(runner, stop_deadline_s=0.01)
    drain = asyncio.ensure_future(driver.drain())
    await _buffer(driver, 0, 1)
    await asyncio.wait_for(sending.wait(), 5)
    with caplog.at_level(logging.INFO):
        await asyncio.wait_for(driver.finish_batch(), 5)
    assert cancelled == [True] and stops == [] and drain.cancelled()
    assert driver.consumer.acked == {}  # type: ignore[attr-defined]
    assert [r.getMessage() for r in caplog.records] == [
        "orders: the batch under way at the stop did not end within 0.01s of the stop; cancelled"
    ]
    assert not any(r.exc_info for r in caplog.records)


async def test_a_batch_failing_as_the_stop_cancels_it_is_said_in_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Its error is retrieved and said, not logged later as never retrieved, nor a crash."""
    sending = asyncio.Event()

    class _FailingRunner(_Runner):
        async def handle_many(self, batches: dict[int, Sequence[_Record]]) -> None:
            sending.set()
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                raise RuntimeError("cleanup failed") from None

    driver, stops = _stopping_driver(_FailingRunner(opened={0}), stop_deadline_s=0.01)
    drain = asyncio.ensure_future(driver.drain())
    await _buffer(driver, 0, 1)
    await asyncio.wait_for(sending.wait(), 5)
    with caplog.at_level(logging.WARNING):
        await asyncio.wait_for(driver.finish_batch(), 5)
    assert stops == [] and drain.cancelled()
    assert "orders: the batch under way at the stop failed (RuntimeError('cleanup failed'))" in [
        r.getMessage() for r in caplog.records
    ]
    assert not any(r.exc_info for r in caplog.records)


async def test_no_batch_starts_once_the_stop_has_ended_the_drain_loop() -> None:
    """Records still buffered then are left unacknowledged, to be read again: a batch started
    after the held entries were sent would meet the senders closing under it."""
    handled = asyncio.Event()

    class _SignallingRunner(_Runner):
        async def handle_many(self, batches: dict[int, Sequence[_Record]]) -> None:
            await super().handle_many(batches)
            handled.set()

    runner = _SignallingRunner(opened={0})
    driver, _ = _driver(runner, _Consumer({0}), ManualClock())  # never told to stop otherwise
    drain = asyncio.ensure_future(driver.drain())
    await _buffer(driver, 0, 1)
    await asyncio.wait_for(handled.wait(), 5)
    await asyncio.wait_for(driver.finish_batch(), 5)
    assert drain.cancelled()  # nothing left to take a batch
    await _buffer(driver, 0, 2)
    assert runner.handled == [{0: [1]}] and driver.buffer.size == 1
    assert driver.consumer.acked == {0: [1]}  # type: ignore[attr-defined]
