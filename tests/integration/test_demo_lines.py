"""What `kappa demo` prints from the topics it reads: a window's `top` line after its product
lines and an anomaly after its product's line even when they are written (and read) before
them, and nothing of what was written before it started."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import pytest

from agents.window_reports import BY_WINDOW_KEY, report_values
from app.admin import ensure_topics
from app.demo_lines import (
    DemoTopics,
    demo_handlers,
    format_anomaly,
    format_ranking,
    format_window,
    print_lines,
)
from app.kafka_clients import new_consumer, new_producer
from app.line_order import LineOrder
from tests.support.checks import eventually

W = 60_000  # one window (ms)


def _window(product: str, start: int) -> bytes:
    return json.dumps(
        {
            "product_id": product,
            "window_start": start,
            "window_end": start + W,
            "count": 1,
            "sum": 2.0,
            "mean": 2.0,
            "min": 2.0,
            "max": 2.0,
            "std": 0.0,
        }
    ).encode()


def _anomaly(product: str, start: int) -> bytes:
    body = {"product_id": product, "window_start": start, "window_end": start + W}
    return json.dumps(body | {"revenue": 2.0, "expected": 50.0, "zscore": -3.5}).encode()


def _ranking(start: int, products: list[str]) -> bytes:
    top = [{"product_id": p, "revenue": 2.0, "count": 1} for p in products]
    return json.dumps({"window_start": start, "window_end": start + W, "top": top}).encode()


def _report(watermark: int, products: list[str], start: int) -> bytes:
    (value,) = report_values(
        0, watermark - W, watermark, [(p, start, start + W, 2.0, 1) for p in products]
    )
    return value


@pytest.mark.integration
async def test_the_demo_prints_a_windows_ranking_and_anomalies_after_its_lines(
    broker: str, unique: str
) -> None:
    topics = DemoTopics(*(f"demo-{name}-{unique}" for name in ("w", "a", "top", "quiet", "rep")))
    await ensure_topics(broker, {t: (2, {}) for t in dataclasses.astuple(topics)})
    producer = new_producer(broker)
    await producer.start()

    async def write(topic: str, key: bytes, value: bytes) -> None:
        await (await producer.send(topic, value, key=key))

    order = LineOrder(partitions=1)
    handlers = demo_handlers(order, topics, 1, W)
    consumer = new_consumer(broker, *handlers, group_id=None, auto_offset_reset="earliest")
    printed: list[str] = []
    stop = asyncio.Event()
    task: asyncio.Task[None] | None = None
    try:
        # Before the demo starts: window 0, whole. Read (it orders what follows), not printed.
        await write(topics.reports, BY_WINDOW_KEY, _report(W, ["a"], 0))
        await write(topics.windows, b"a", _window("a", 0))
        await write(topics.rankings, b"0", _ranking(0, ["a"]))
        await consumer.start()
        task = asyncio.create_task(
            print_lines(consumer, handlers, lambda: not stop.is_set(), printed.append)
        )

        async def window_0_read() -> None:
            assert 0 in order.done

        await eventually(window_0_read, timeout=60)
        # Window 1: its ranking and b's anomaly are written before b's window line.
        await write(topics.reports, BY_WINDOW_KEY, _report(2 * W, ["a", "b"], W))
        await write(topics.windows, b"a", _window("a", W))
        await write(topics.rankings, str(W).encode(), _ranking(W, ["a", "b"]))
        await write(topics.anomalies, b"b", _anomaly("b", W))

        async def ranking_and_anomaly_held() -> None:
            assert (order.held(), printed) == (2, [format_window(json.loads(_window("a", W)))])

        await eventually(ranking_and_anomaly_held, timeout=60)
        await write(topics.windows, b"b", _window("b", W))

        async def all_printed() -> None:
            assert len(printed) == 4

        await eventually(all_printed, timeout=60)
    finally:
        stop.set()
        if task is not None:
            await task
        await consumer.stop()
        await producer.stop()
    assert printed == [
        format_window(json.loads(_window("a", W))),
        format_window(json.loads(_window("b", W))),
        format_anomaly(json.loads(_anomaly("b", W))),
        format_ranking(json.loads(_ranking(W, ["a", "b"]))),
    ]
