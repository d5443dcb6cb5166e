"""The bounded buffer between a topic's fetches and its pipeline's drain loop.

Pure asyncio: the faust adapter (`app.batch_delivery`) fills it from fetch responses, and
`app.pipeline_driver` takes a batch at a time out of it, after a linger like a producer's.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable
from typing import Any


class BatchBuffer:
    """One topic's fetched records (raw records or faust messages: anything with a `partition`),
    per partition in offset order, bounded: a full buffer makes the fetch loop wait for room,
    for a while (`put_many`), and then hold back the topic's partitions."""

    def __init__(
        self, max_buffered: int, target: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_buffered = max_buffered
        self.target = min(target, max_buffered)
        self.partitions: dict[int, list[Any]] = {}
        self.size = 0
        self.clock = clock
        self.oldest_at = 0.0  # clock() when the oldest buffered message arrived (s)
        self.has_data = asyncio.Event()
        self.reached_target = asyncio.Event()
        self.has_room = asyncio.Event()
        self.has_room.set()

    async def put(self, message: Any) -> None:
        await self.put_many(message.partition, [message])

    async def wait_for_batch(self, linger_s: float) -> None:
        """Return when something is buffered and either the target size is reached or the
        oldest buffered message has waited `linger_s`.

        Like a Kafka producer's `linger.ms`, the linger counts from the first message's
        arrival, not from when the drain loop asks: it trades a few ms of latency for batches
        big enough to amortise the per-batch costs when records trickle in, and adds nothing
        when the previous cycle already took longer than the linger (steady load).
        """
        await self.has_data.wait()
        if self.size >= self.target or linger_s <= 0:
            return
        remaining = self.oldest_at + linger_s - self.clock()
        if remaining > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.reached_target.wait(), remaining)

    @property
    def full(self) -> bool:
        return self.size >= self.max_buffered

    async def put_many(
        self, partition: int, messages: list[Any], wait_s: float | None = None
    ) -> bool:
        """Append one partition's records (in offset order). While the buffer is then full,
        wait for room: until there is (`wait_s` None) or for up to `wait_s`. Whether there is
        room now: False tells the caller to stop fetching for the topic."""
        if not messages:
            return not self.full
        buf = self.partitions.get(partition)
        if buf is None:
            self.partitions[partition] = list(messages)
        else:
            buf.extend(messages)
        if not self.size:
            self.oldest_at = self.clock()
        self.size += len(messages)
        self.has_data.set()
        if self.size >= self.target:
            self.reached_target.set()
        if self.full:
            self.has_room.clear()
            if wait_s is None:
                await self.has_room.wait()
            elif wait_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.has_room.wait(), wait_s)
        return not self.full

    def take(self, partitions: Iterable[int] | None = None) -> dict[int, list[Any]]:
        """Remove and return the buffered messages (of `partitions`, or all)."""
        if partitions is None:
            taken, self.partitions = self.partitions, {}
        else:
            taken = {p: self.partitions.pop(p) for p in list(partitions) if p in self.partitions}
        self.size -= sum(len(v) for v in taken.values())
        if not self.size:
            self.has_data.clear()
        if self.size < self.target:
            self.reached_target.clear()
        if not self.full:
            self.has_room.set()
        return taken
