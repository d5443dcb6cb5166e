"""An iterator that may block (a file read, a named pipe whose writer stalls), taken in a thread
and handed to the event loop item by item.

Iterated in the loop, a read that waits for data holds the loop: nothing is sent meanwhile, and
a stop (Ctrl-C, SIGTERM) waits for more data, for ever if none comes. In a thread, only the
thread waits; the loop sends what has been read and takes the stop.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncGenerator, Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

# Items read ahead of the loop at most, and their bytes (as `size` counts them): enough for the
# loop never to wait on a file that is there, little enough for a few large records.
MAX_AHEAD_ITEMS = 5_000
MAX_AHEAD_BYTES = 32 * 1024 * 1024


class ReadAhead(Generic[T]):
    """`source`'s items, taken in a daemon thread up to `max_items` (and `max_bytes` by `size`)
    ahead of the loop, and its error, if it fails, after the items before it.

    A thread that got that far ahead waits until the loop has taken half of them: one wake-up
    per many items, not one per item. `close` (on a stop, or an error sending) lets the thread
    end at its next item; a thread waiting in a read that never returns is a daemon: it does
    not keep the process alive. Iterate it once, in one event loop."""

    def __init__(
        self,
        source: Iterator[T],
        size: Callable[[T], int] = lambda item: 0,
        max_items: int = MAX_AHEAD_ITEMS,
        max_bytes: int = MAX_AHEAD_BYTES,
        name: str = "kappa-read-ahead",
    ) -> None:
        self._source = source
        self._size = size
        self._max_items = max_items
        self._max_bytes = max_bytes
        self._name = name
        self._lock = threading.Lock()  # over everything below
        self._items: deque[tuple[T, int]] = deque()
        self._bytes = 0
        self._ended = False  # the source is exhausted, or failed with `_error`
        self._error: BaseException | None = None
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None  # the loop waits for an item
        self._room = threading.Event()  # the thread, ahead as far as it may go, waits for it
        self._thread_waits = False

    def __aiter__(self) -> AsyncGenerator[T, None]:
        return self._items_as_read()

    async def _items_as_read(self) -> AsyncGenerator[T, None]:
        loop = self._loop = asyncio.get_running_loop()
        threading.Thread(target=self._read, name=self._name, daemon=True).start()
        try:
            while True:
                waiter: asyncio.Future[None] | None = None
                room = False
                with self._lock:
                    if self._items:
                        item, size = self._items.popleft()
                        self._bytes -= size
                        if self._thread_waits and self._half_taken():
                            self._thread_waits = False
                            room = True
                    elif not self._ended:
                        waiter = self._waiter = loop.create_future()
                    elif self._error is not None:
                        error, self._error = self._error, None
                        raise error
                    else:
                        return
                if waiter is not None:
                    await waiter
                    continue
                if room:
                    self._room.set()
                yield item
        finally:
            self.close()

    def close(self) -> None:
        """No more items are wanted: the thread ends at its next one, closing `source`."""
        with self._lock:
            self._closed = True
        self._room.set()

    def _read(self) -> None:
        """The thread: take the source's items until it ends, fails or is no longer wanted."""
        try:
            for item in self._source:
                if not self._put(item, self._size(item)):
                    break
        except Exception as e:  # the loop raises it, after the items read before it
            with self._lock:
                self._error = e
        finally:
            close = getattr(self._source, "close", None)
            if close is not None:
                close()  # a generator's `with` blocks run here, in the thread that runs it
            with self._lock:
                self._ended = True
                waiter, self._waiter = self._waiter, None
            self._wake(waiter)

    def _put(self, item: T, size: int) -> bool:
        """Hand `item` to the loop, once there is room; False when it is no longer wanted."""
        while True:
            with self._lock:
                if self._closed:
                    return False
                if not self._full():
                    self._items.append((item, size))
                    self._bytes += size
                    waiter, self._waiter = self._waiter, None
                    break
                self._room.clear()
                self._thread_waits = True
            self._room.wait()
        self._wake(waiter)
        return True

    def _full(self) -> bool:
        return bool(self._items) and (
            len(self._items) >= self._max_items or self._bytes >= self._max_bytes
        )

    def _half_taken(self) -> bool:
        return len(self._items) <= self._max_items // 2 and self._bytes <= self._max_bytes // 2

    def _wake(self, waiter: asyncio.Future[None] | None) -> None:
        """Hand the loop what it waits for (`waiter`, taken from `_waiter` under the lock)."""
        if waiter is not None and self._loop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self._loop.call_soon_threadsafe(_resolve, waiter)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
