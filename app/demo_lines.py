"""What `kappa demo` prints from the topics it reads: a line per record (windows, anomalies,
rankings, quiet products), in the order `app.line_order` keeps (a window's `top` line after
its product lines, an anomaly after its product's line), and only for records written after
the demo started."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.window_reports import parse_report
from app.line_order import LineOrder


@dataclass(frozen=True, slots=True)
class DemoTopics:
    """The physical topics the demo reads: four it prints, and the reports that order them."""

    windows: str  # orders.revenue-1m
    anomalies: str  # orders.anomalies
    rankings: str  # orders.top-products
    quiet: str  # orders.quiet-products
    reports: str  # orders.by-window: read, never printed


# The formatters take a record's value, decoded (the handlers read its fields too).


def _clock(ms: int) -> str:
    """An event time (epoch ms) as the UTC time of day."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%H:%M:%S")


def format_window(d: dict[str, Any]) -> str:
    start, end = _clock(d["window_start"]), _clock(d["window_end"])
    return (
        f"{d['product_id']:>8}  [{start}, {end})  count={d['count']:<4} sum={d['sum']:>10.2f}  "
        f"mean={d['mean']:>8.2f}  min={d['min']:>8.2f}  max={d['max']:>8.2f}  std={d['std']:>8.2f}"
    )


def format_anomaly(d: dict[str, Any]) -> str:
    start = _clock(d["window_start"])
    z = "-" if d["zscore"] is None else f"{d['zscore']:+.1f}"
    return (
        f"{d['product_id']:>8}  [{start}] ANOMALY  revenue={d['revenue']:.2f}, "
        f"forecast {d['expected']:.2f} (z={z})"
    )


def format_quiet(d: dict[str, Any]) -> str:
    since, until = _clock(d["quiet_from"]), _clock(d["quiet_until"])
    return (
        f"{d['product_id']:>8}  [{since}, {until})  QUIET  no order in {d['windows']} window(s), "
        f"{d['expected_orders']:.1f} expected"
    )


def format_ranking(d: dict[str, Any]) -> str:
    start = _clock(d["window_start"])
    top = ", ".join(f"{e['product_id']} {e['revenue']:.2f}" for e in d["top"][:3])
    return f"     top  [{start}] {top}"


def demo_handlers(
    order: LineOrder, topics: DemoTopics, partitions: int, window_ms: int
) -> dict[str, Callable[[bytes, bool], list[str]]]:
    """Per topic: a record's value and whether it is new (to be printed) → the lines to print
    now, in the order `order` keeps (`app.line_order`)."""

    def window(value: bytes, new: bool) -> list[str]:
        d = json.loads(value)
        closed = d.get("final") is not False  # a running update, or a provisional window
        line = format_window(d) if new else None
        return order.window(d["product_id"], d["window_start"], closed, line)

    def anomaly(value: bytes, new: bool) -> list[str]:
        d = json.loads(value)
        line = format_anomaly(d) if new else None
        return order.anomaly(d["product_id"], d["window_start"], line)

    def ranking(value: bytes, new: bool) -> list[str]:
        d = json.loads(value)
        line = format_ranking(d) if new else None
        return order.ranking(d["window_start"], d["window_end"], line)

    def quiet(value: bytes, new: bool) -> list[str]:
        return [format_quiet(json.loads(value))] if new else []

    def report(value: bytes, new: bool) -> list[str]:
        try:
            src, _, watermark, windows = parse_report(value, partitions, window_ms)
        except ValueError:  # not a report (the ranking pipeline sends it to its DLQ)
            return []
        return order.report(src, watermark, ((w[0], w[1]) for w in windows))

    return {
        topics.windows: window,
        topics.anomalies: anomaly,
        topics.rankings: ranking,
        topics.quiet: quiet,
        topics.reports: report,
    }


async def print_lines(
    consumer: AIOKafkaConsumer,
    handlers: dict[str, Callable[[bytes, bool], list[str]]],
    going: Callable[[], bool],
    emit: Callable[[str], None],
) -> None:
    """Read the started `consumer` (every partition of the handlers' topics, from their
    beginning) while `going()`, and emit the lines the handlers return.

    A record is new if it was written after the demo started: at or past the high watermark
    of the first fetch response for its partition (fetch responses' high watermarks are right
    on the dev broker, its ListOffsets "latest" is not). What came before is read all the same,
    unprinted: the lines that follow may have to wait for it (`app.line_order`)."""
    firsts: dict[TopicPartition, int] = {}  # each partition's first new offset
    while going():
        batches = await consumer.getmany(timeout_ms=500)
        # aiokafka fetches a partition again only once all it fetched of it was returned: a
        # partition's high watermark now is that of the response its records here came from.
        for tp in consumer.assignment():
            if tp not in firsts and (highwater := consumer.highwater(tp)) is not None:
                firsts[tp] = highwater
        for tp, records in batches.items():
            handle, first = handlers[tp.topic], firsts[tp]
            for r in records:
                for line in handle(r.value, r.offset >= first):
                    emit(line)
