"""The reports the orders pipeline sends onto `orders.by-window` for the top-products
ranking: the windows a batch closed, and the source partition's watermark after them.

One key for all reports, so one partition of the topic sees every source partition's reports,
each partition's in the order it sent them. A report too big for one record is cut into
records of at most 1,000 windows, and only the last carries the watermark: a watermark must
not pass a window before all of the report that closes it has arrived.
"""

from __future__ import annotations

import json

from tables.top_k import ClosedWindow

BY_WINDOW = "orders.by-window"
BY_WINDOW_KEY = b"all"
WINDOWS_PER_RECORD = 1_000


def report_values(
    partition: int, watermark: int | None, windows: list[ClosedWindow]
) -> list[bytes]:
    """A partition's report as record values (compact JSON, fixed field order)."""
    chunks = [
        windows[i : i + WINDOWS_PER_RECORD] for i in range(0, len(windows), WINDOWS_PER_RECORD)
    ] or [[]]
    out = []
    for i, chunk in enumerate(chunks):
        mark = watermark if i == len(chunks) - 1 else None
        body = {"src": partition, "wm": mark, "w": [list(w) for w in chunk]}
        out.append(json.dumps(body, separators=(",", ":")).encode())
    return out


def parse_report(raw: bytes | None, partitions: int) -> tuple[int, int | None, list[ClosedWindow]]:
    """(source partition, watermark or None, closed windows) of a report; ValueError if it is
    not one the orders pipeline writes."""
    try:
        d = json.loads(raw or b"")
    except (ValueError, RecursionError):
        raise ValueError("not JSON") from None
    if type(d) is not dict:
        raise ValueError("not a JSON object")
    src, wm, windows = d.get("src"), d.get("wm"), d.get("w")
    if type(src) is not int or not 0 <= src < partitions:
        raise ValueError(f"src must be a partition of the source (0 to {partitions - 1})")
    if wm is not None and (type(wm) is not int or not -(1 << 62) < wm < 1 << 62):
        raise ValueError("wm must be an integer or null")
    if type(windows) is not list:
        raise ValueError("w must be a list of windows")
    out: list[ClosedWindow] = []
    for w in windows:
        if type(w) is not list or len(w) != 5:
            raise ValueError("a window must be [product, start, end, revenue, count]")
        product, start, end, value, count = w
        if not (
            type(product) is str
            and product
            and type(start) is int
            and type(end) is int
            and -(1 << 62) < start < end < 1 << 62
            and type(value) in (int, float)
            and 0 <= value < float("inf")
            and type(count) is int
            and 1 <= count < 1 << 63
        ):
            raise ValueError("a window must be [product, start, end, revenue, count]")
        out.append((product, start, end, float(value), count))
    return src, wm, out
