"""The reports the orders pipeline sends onto `orders.by-window` for the top-products
ranking: the windows a batch closed, the source partition's watermark before the batch
(`from`) and after it (`wm`).

One key for all reports, so one partition of the topic sees every source partition's reports,
each partition's in the order it sent them. A report too big for one record is cut into
records of at most `RECORD_BYTES`, sent in order, and only the last carries the watermark: a
watermark must not pass a window before all of the report that closes it has arrived.
"""

from __future__ import annotations

import json
import math
from typing import Any

from agents.base import json_str
from tables.top_k import ClosedWindow

BY_WINDOW = "orders.by-window"
BY_WINDOW_KEY = b"all"
RECORD_BYTES = 256_000  # well under Kafka's default max.message.bytes (1,048,588)
MAX_TOTAL = 1e24  # the largest total of one order (orders' MAX_AMOUNT × MAX_QUANTITY)
MAX_WINDOW_COUNT = 1 << 40  # orders in one window: far beyond any real one, and int64-safe

Report = tuple[int, int | None, int | None, list[ClosedWindow]]  # src, from, wm, windows


def total_orders_can_reach(total: float, count: int) -> bool:
    """0 <= `total` <= what `count` orders add up to, NaN refused. The orders pipeline sums a
    window's totals one order at a time, each addition rounded: n of the largest total sum to
    up to (n - 1) × 2^-53 above n × MAX_TOTAL (26 of them already exceed it), so that much
    rounding is allowed for."""
    return 0.0 <= total <= MAX_TOTAL * count * (1.0 + count * 2.0**-52)


def report_values(
    partition: int, since: int | None, watermark: int | None, windows: list[ClosedWindow]
) -> list[bytes]:
    """A partition's report as record values (compact JSON, fixed field order)."""
    encoded = [  # what json.dumps(list(w), separators=(",", ":")) gives, formatted directly
        f"[{json_str(k)},{start},{end},{value!r},{count}]"
        for k, start, end, value, count in windows
    ]
    chunks: list[list[str]] = [[]]
    size = 0
    for w in encoded:
        if chunks[-1] and size + len(w) + 1 > RECORD_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(w)
        size += len(w) + 1
    head = f'{{"src":{partition},"from":{json.dumps(since)},"wm":'
    last = len(chunks) - 1
    return [
        f'{head}{json.dumps(watermark if i == last else None)},"w":[{",".join(c)}]}}'.encode()
        for i, c in enumerate(chunks)
    ]


def json_object(raw: bytes | None) -> dict[str, Any]:
    """A record value that must be a JSON object; ValueError naming what it is not."""
    try:
        d = json.loads(raw or b"")
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if type(d) is not dict:
        raise ValueError("not a JSON object")
    return d


def parse_report(raw: bytes | None, partitions: int, window_ms: int) -> Report:
    """(source partition, watermark before, watermark after or None, closed windows) of a
    report; ValueError if it is not one the orders pipeline writes."""
    d = json_object(raw)
    src, since, wm, windows = d.get("src"), d.get("from"), d.get("wm"), d.get("w")
    if type(src) is not int or not 0 <= src < partitions:
        raise ValueError(f"src must be a partition of the source (0 to {partitions - 1})")
    for mark in (since, wm):
        if mark is not None and (type(mark) is not int or not -(1 << 62) < mark < 1 << 62):
            raise ValueError("from and wm must be integers or null")
    if type(windows) is not list:
        raise ValueError("w must be a list of windows")
    out: list[ClosedWindow] = []
    for w in windows:
        if type(w) is not list or len(w) != 5:
            raise ValueError("a window must be [product, start, end, revenue, count]")
        product, start, end, value, count = w
        if type(product) is str and not product.isascii() and not _utf8(product):
            raise ValueError("a window's product must be UTF-8 text (it names state keys)")
        try:
            total = float(value) if type(value) in (int, float) else math.nan
        except OverflowError:
            total = math.inf
        if not (
            type(product) is str
            and product
            and type(start) is int
            and type(end) is int
            and end - start == window_ms
            and start % window_ms == 0
            and abs(start) < 1 << 62
            and type(count) is int
            and 1 <= count <= MAX_WINDOW_COUNT
            and total_orders_can_reach(total, count)
        ):
            raise ValueError(
                f"a window must be [product, start, end, revenue, count], {window_ms} ms long "
                "and aligned to the epoch, with what orders can add up to"
            )
        out.append((product, start, end, total, count))
    return src, since, wm, out


def _utf8(text: str) -> bool:
    """Whether `text` encodes as UTF-8: JSON can carry a lone surrogate ("\\ud800"), which
    no state key or output key can hold."""
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True
