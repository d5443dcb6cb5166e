"""Producing records (generated or loaded from a file) to Kafka fast, at a paced rate.

Wall-clock time is fine here: this is a producer feeding the pipeline, not part of the
event-time core.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Sized
from contextlib import AbstractContextManager, nullcontext
from typing import Any, TypeVar

from aiokafka import AIOKafkaProducer
from aiokafka.errors import MessageSizeTooLargeError
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from app.cli_output import PROGRESS
from app.kafka_clients import Conn, new_producer
from app.kafka_runner import close_on_stop

T = TypeVar("T")

# Await send futures in chunks of this many records: bounded memory, no per-record round trip.
SEND_CHUNK = 5_000
# Largest request the producer may send (bytes): large batches and records over 1 MB.
MAX_REQUEST_SIZE = 16 * 1024 * 1024
# Per-partition batch size (bytes): the 16 KiB default caps aiokafka throughput on small records.
MAX_BATCH_SIZE = 256 * 1024
# Seconds between plain progress log lines when no progress bar is shown.
LOG_EVERY_S = 5.0
# Rate limiting sleeps at most this often (s): coarse enough to be cheap, fine enough to be smooth.
RATE_TICK_S = 0.05
# Most credit (s of ``rate``) the rate limiter saves up after falling behind: the bucket's depth.
RATE_BURST_S = 1.0


class RateLimiter:
    """Token bucket refilled at ``rate`` events/s, at most ``burst_s`` seconds of credit deep.

    Pure (the caller passes the clock, in seconds) so it can be tested without waiting.
    """

    def __init__(self, rate: float, now: float, burst_s: float = RATE_BURST_S) -> None:
        if rate <= 0:
            raise ValueError(f"rate must be > 0 events/s, got {rate}")
        self._rate = rate
        self._burst_s = burst_s
        self._origin = now

    def delay(self, sent: int, now: float) -> float:
        """Seconds to sleep before sending more, given ``sent`` so far (0.0: go on)."""
        ahead = sent / self._rate - (now - self._origin)
        if ahead < -self._burst_s:
            # Fell behind (slow broker, paused source): keep only burst_s of saved-up credit,
            # so the catch-up is not a flood.
            self._origin = now - sent / self._rate - self._burst_s
        return max(ahead, 0.0)


class _Reporter:
    """Progress on a TTY as a rich bar, elsewhere as a log line every LOG_EVERY_S seconds."""

    def __init__(self, topic: str, total: int | None, use_bar: bool) -> None:
        self._topic = topic
        self._total = total
        self._started = time.monotonic()
        self._last_log = self._started
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        if use_bar:
            self._progress = Progress(
                TextColumn("[bold]producing to {task.fields[topic]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]:>10,.0f} ev/s"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self._task = self._progress.add_task("produce", total=total, topic=topic, rate=0.0)

    def context(self) -> AbstractContextManager[object]:
        """The bar's live display for the duration of the run (nothing when logging)."""
        return self._progress if self._progress is not None else nullcontext()

    def update(self, sent: int, final: bool = False) -> None:
        """Report ``sent`` records so far; cheap enough to call once per chunk."""
        now = time.monotonic()
        rate = sent / max(now - self._started, 1e-9)
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, completed=sent, rate=rate)
            return
        if final or now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            of_total = f"/{self._total:,}" if self._total is not None else ""
            PROGRESS.info(
                "%s %s%s %s to %s (%.0f ev/s)",
                "produced" if final else "producing",
                f"{sent:,}",
                of_total,
                "record" if (self._total or sent) == 1 else "records",
                self._topic,
                rate,
            )


class RecordTooLarge(Exception):
    """A record over `MAX_REQUEST_SIZE`, refused by the producer before it was sent: the
    records before it (`index` of them) were handed to the producer."""

    def __init__(self, index: int, size: int) -> None:
        super().__init__(f"record {index + 1} is {size} bytes, over {MAX_REQUEST_SIZE}")
        self.index = index
        self.size = size  # bytes as a one-record batch, as the producer measures it


async def _start_or_stop(producer: AIOKafkaProducer) -> None:
    """Start the producer, stopping it again if that fails so nothing is left unclosed."""
    try:
        await producer.start()
    except BaseException:
        await producer.stop()
        raise


async def _taken_in_loop(records: Iterable[T]) -> AsyncIterator[T]:
    """Records that never wait for data long (generated, a regular file's), as they come."""
    for record in records:
        yield record


async def produce_records(
    bootstrap: Conn,
    topic: str,
    records: Iterable[tuple[bytes | None, bytes]] | AsyncIterable[tuple[bytes | None, bytes]],
    rate: float | None = None,
    progress: bool = True,
    linger_ms: int = 5,
    total: int | None = None,
) -> int:
    """Send (key, value) records to ``topic``, partitioned by key; returns how many were sent.

    Sends are pipelined and their futures awaited every SEND_CHUNK records, so every record is
    acknowledged before this returns. ``rate`` caps events per second (None: as fast as possible).
    ``total`` only sizes the progress bar (taken from ``len(records)`` when it has one).
    A record over ``MAX_REQUEST_SIZE`` is `RecordTooLarge`. ``records`` that may wait for data
    (a named pipe's) come as an async iterable (`app.read_ahead.ReadAhead`), so the loop sends
    and takes a stop meanwhile; they are closed on the way out, however it ends, and the
    producer too, within `close_on_stop`'s deadline.
    """
    if total is None and isinstance(records, Sized):
        total = len(records)
    reporter = _Reporter(topic, total, use_bar=progress and sys.stdout.isatty())
    limiter = RateLimiter(rate, time.monotonic()) if rate is not None else None
    # Check the rate this often (records) so sleeps are about RATE_TICK_S long.
    rate_check = max(1, min(SEND_CHUNK, int(rate * RATE_TICK_S))) if rate is not None else 0

    producer = new_producer(
        bootstrap,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=MAX_BATCH_SIZE,
        max_request_size=MAX_REQUEST_SIZE,
        compression_type=None,
    )
    await _start_or_stop(producer)
    sent = 0
    pending: list[asyncio.Future[Any]] = []
    items = aiter(records) if isinstance(records, AsyncIterable) else _taken_in_loop(records)
    try:
        with reporter.context():
            async for key, value in items:
                try:
                    pending.append(await producer.send(topic, value, key=key))
                except MessageSizeTooLargeError:  # the client's limit: the broker saw nothing
                    size = DefaultRecordBatchBuilder.estimate_size_in_bytes(key, value, [])
                    raise RecordTooLarge(sent, size) from None
                sent += 1
                if len(pending) >= SEND_CHUNK:
                    await asyncio.gather(*pending)
                    pending.clear()
                    reporter.update(sent)
                if limiter is not None and sent % rate_check == 0:
                    delay = limiter.delay(sent, time.monotonic())
                    if delay > 0:
                        await asyncio.sleep(delay)
                    reporter.update(sent)
            await asyncio.gather(*pending)
            pending.clear()
            reporter.update(sent, final=True)
    finally:
        for future in pending:
            future.cancel()
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
        # Within a deadline of its own: stopped (or failed) with sends in flight to a broker
        # that does not answer, aiokafka's stop waits up to its request timeout (40 s). Those
        # records are counted as "up to" and a rerun sends them again.
        await close_on_stop([producer.stop], "closing the producer")
    return sent
