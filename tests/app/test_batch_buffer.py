"""BatchBuffer: the bounded per-topic buffer between faust's consumer and a pipeline's drain loop.

No broker: messages are plain objects with a partition, and time is a settable clock, so the
linger is checked by what has or has not returned after the event loop ran, never by timing.
"""

from __future__ import annotations

import asyncio

import pytest

from app.batch_buffer import BatchBuffer
from tests.support.fakes import ManualClock, Msg

LONG_LINGER_S = 3600.0  # never reached in a test: only the clock decides


async def settle() -> None:
    """Let every ready task run until it blocks (wait_for's inner task takes a few turns)."""
    for _ in range(20):
        await asyncio.sleep(0)


async def waiting(buffer: BatchBuffer, linger_s: float) -> asyncio.Task[None]:
    """The drain loop's wait, started and run until it blocks or returns."""
    task = asyncio.create_task(buffer.wait_for_batch(linger_s))
    await settle()
    return task


@pytest.mark.asyncio
async def test_linger_waits_for_the_target_while_the_oldest_message_is_fresh() -> None:
    clock = ManualClock(100.0)
    buffer = BatchBuffer(100, target=3, clock=clock)
    await buffer.put(Msg(0, 1))
    wait = await waiting(buffer, LONG_LINGER_S)
    assert not wait.done()
    await buffer.put_many(1, [Msg(1, 1), Msg(1, 2)])  # target reached
    await settle()
    assert wait.done()


@pytest.mark.asyncio
async def test_linger_counts_from_the_oldest_messages_arrival() -> None:
    """After a cycle longer than the linger, what arrived during it is taken at once."""
    clock = ManualClock(100.0)
    buffer = BatchBuffer(100, target=50, clock=clock)
    await buffer.put(Msg(0, 1))
    clock.now += 0.050  # the previous cycle took 50 ms
    await buffer.put(Msg(0, 2))  # a newer message does not restart the linger
    assert (await waiting(buffer, 0.010)).done()


@pytest.mark.asyncio
async def test_linger_restarts_once_the_buffer_was_emptied() -> None:
    clock = ManualClock(100.0)
    buffer = BatchBuffer(100, target=50, clock=clock)
    await buffer.put(Msg(0, 1))
    clock.now += 1.0
    assert buffer.take() == {0: [Msg(0, 1)]}
    await buffer.put_many(0, [Msg(0, 2)])
    wait = await waiting(buffer, LONG_LINGER_S)
    assert not wait.done()  # the new oldest message arrived just now
    wait.cancel()


@pytest.mark.asyncio
async def test_waits_for_data_and_returns_without_linger_when_linger_is_zero() -> None:
    buffer = BatchBuffer(100, target=50, clock=ManualClock(100.0))
    wait = await waiting(buffer, 0)
    assert not wait.done()
    await buffer.put(Msg(2, 7))
    await settle()
    assert wait.done()


@pytest.mark.asyncio
async def test_a_full_buffer_holds_the_consumer_until_a_batch_is_taken() -> None:
    buffer = BatchBuffer(3, target=1, clock=ManualClock(100.0))
    await buffer.put_many(0, [Msg(0, 1), Msg(0, 2)])
    putting = asyncio.create_task(buffer.put(Msg(1, 1)))  # the third fills the buffer
    await settle()
    assert not putting.done()
    taken = buffer.take([0])  # a partial take (a revoked partition) makes room
    await settle()
    assert putting.done()
    assert taken == {0: [Msg(0, 1), Msg(0, 2)]}
    assert buffer.take() == {1: [Msg(1, 1)]}
    assert buffer.size == 0 and not buffer.has_data.is_set()


@pytest.mark.asyncio
async def test_a_full_buffer_waits_for_room_only_as_long_as_it_is_asked_to() -> None:
    """The fetch loop waits a while for room, then holds the source back and goes on."""
    buffer = BatchBuffer(3, target=1, clock=ManualClock(100.0))
    assert await buffer.put_many(0, [Msg(0, 1)], wait_s=0.0)  # room left
    assert not await buffer.put_many(0, [Msg(0, 2), Msg(0, 3)], wait_s=0.0)  # full: at once
    assert not await buffer.put_many(1, [Msg(1, 1)], wait_s=0.01)  # still full after the wait
    assert buffer.size == 4  # appended all the same: nothing fetched is dropped
    putting = asyncio.create_task(buffer.put_many(1, [Msg(1, 2)], wait_s=LONG_LINGER_S))
    await settle()
    assert not putting.done()
    buffer.take([0])
    await settle()
    assert putting.done() and putting.result()
    assert not buffer.full
