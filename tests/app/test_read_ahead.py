"""An iterator taken in a thread: its items and its error in order, a wait in it not holding
the loop, and a reader closed part way letting the thread go."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator

import pytest

from app.read_ahead import ReadAhead

WAIT_S = 60.0  # generous: only a thread that never gets there fails it


async def test_the_items_come_in_order_and_then_the_sources_error() -> None:
    def source() -> Iterator[int]:
        yield from range(1_000)
        raise ValueError("line 1,001 is not UTF-8 text")

    taken: list[int] = []
    with pytest.raises(ValueError, match="line 1,001"):
        async for item in ReadAhead(source(), max_items=7):
            taken.append(item)
    assert taken == list(range(1_000))


async def test_a_source_waiting_for_data_holds_its_thread_not_the_loop() -> None:
    """As a named pipe whose writer stalls: the items before the wait are taken, the loop
    runs on while the source waits, and the task waiting for the next item can be cancelled
    (a stop)."""
    stalled, more = threading.Event(), threading.Event()

    def source() -> Iterator[str]:
        yield "a"
        yield "b"
        stalled.set()
        more.wait(WAIT_S)  # the writer stalls (a loop held here would be held this long)
        yield "c"

    items = aiter(ReadAhead(source()))
    assert [await anext(items), await anext(items)] == ["a", "b"]
    waiting = asyncio.ensure_future(anext(items))
    # awaited in the loop: it gets there only if the source's wait does not hold the loop
    assert await asyncio.to_thread(stalled.wait, WAIT_S)
    assert not waiting.done()  # the source is stalled: no "c" yet, nor an end
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    more.set()  # let the thread go, which a cancelled reader no longer takes from


async def test_a_reader_closed_part_way_lets_the_thread_end_and_close_the_source() -> None:
    pulled = 0
    closed = threading.Event()

    def source() -> Iterator[int]:
        nonlocal pulled
        try:
            while True:
                pulled += 1
                yield pulled
        finally:
            closed.set()  # a file's `with` block: closed in the thread

    reader = ReadAhead(source(), max_items=3)
    taken = 0
    async for _ in reader:
        taken += 1
        # at most the bound ahead, plus the one in the thread's hand
        assert pulled - taken <= 3 + 1
        if taken == 100:
            break
    reader.close()
    assert await asyncio.to_thread(closed.wait, WAIT_S)


async def test_large_items_are_read_ahead_up_to_the_byte_bound_and_one_at_least() -> None:
    pulled = 0

    def source() -> Iterator[bytes]:
        nonlocal pulled
        for _ in range(20):
            pulled += 1
            yield b"x" * 100

    taken = 0
    async for _ in ReadAhead(source(), size=len, max_bytes=250):
        taken += 1
        assert pulled - taken <= 3 + 1  # 3 items reach 250 bytes
    assert taken == 20
