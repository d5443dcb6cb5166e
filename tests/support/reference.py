"""The plain batch computation every engine result is checked against.

Deliberately simple and independent of the engine: walk each partition in offset order, apply
the watermark rule, group by (key, window), and compute the statistics directly.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from agents.base import SourceRecord
from agents.orders import parse_order
from tables.cleaning import DEFAULT_MAX_TS_AHEAD_MS, InvalidRecord

# A source record: (offset, key, value), or (offset, key, value, its Kafka timestamp). An
# order's ts is checked against the timestamp (KAPPA_MAX_TS_AHEAD_MS) only if it has one.
SourceRow = (
    tuple[int, bytes | None, bytes | None] | tuple[int, bytes | None, bytes | None, int | None]
)


def _record(p: int, row: SourceRow) -> SourceRecord:
    return SourceRecord("orders", p, row[0], row[3] if len(row) == 4 else None, row[1], row[2])


@dataclass
class Reference:
    windows: dict[tuple[str, int, int], dict[str, float]] = field(default_factory=dict)
    late: set[tuple[int, int]] = field(default_factory=set)  # (partition, offset)
    dlq: dict[tuple[int, int], str] = field(default_factory=dict)  # → reason
    user_totals: dict[str, tuple[int, float]] = field(default_factory=dict)
    watermarks: dict[int, int] = field(default_factory=dict)  # partition → final watermark
    product_partitions: dict[str, int] = field(default_factory=dict)  # the source partition


def compute(
    records: Mapping[int, Sequence[SourceRow]],
    window_ms: int,
    grace_ms: int,
    flush: bool = False,
    max_ts_ahead_ms: int = DEFAULT_MAX_TS_AHEAD_MS,
) -> Reference:
    """`records`: partition → [(offset, key, value[, timestamp])] in offset order.

    Windows are those closed by each partition's final watermark (all of them if `flush`).
    """
    ref = Reference()
    groups: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    window_partition: dict[tuple[str, int, int], int] = {}
    final_wm: dict[int, int] = {}
    users: dict[str, list[float]] = defaultdict(list)
    for p, recs in records.items():
        max_ts: int | None = None
        for row in recs:
            offset = row[0]
            try:
                order = parse_order(_record(p, row), max_ts_ahead_ms)
            except InvalidRecord as e:
                ref.dlq[(p, offset)] = e.reason
                continue
            users[order.user_id].append(order.total)
            max_ts = order.ts if max_ts is None else max(max_ts, order.ts)
            start = order.ts - order.ts % window_ms
            wkey = (order.product_id, start, start + window_ms)
            if start + window_ms <= max_ts - grace_ms:
                ref.late.add((p, offset))
                continue
            groups[wkey].append(order.total)
            window_partition[wkey] = p
            ref.product_partitions[order.product_id] = p
        if max_ts is not None:
            final_wm[p] = max_ts - grace_ms
    for wkey, values in groups.items():
        if flush or wkey[2] <= final_wm[window_partition[wkey]]:
            ref.windows[wkey] = window_statistics(values)
    ref.user_totals = {u: (len(v), math.fsum(v)) for u, v in users.items()}
    ref.watermarks = final_wm
    return ref


def assert_windows_equal(
    got: dict[tuple[str, int, int], dict[str, float]], want: Reference
) -> None:
    missing = set(want.windows) - set(got)
    extra = set(got) - set(want.windows)
    assert not missing and not extra, f"missing {sorted(missing)[:5]} extra {sorted(extra)[:5]}"
    for k, exp in want.windows.items():
        g = got[k]
        assert g["count"] == exp["count"], (k, g, exp)
        assert g["min"] == exp["min"] and g["max"] == exp["max"], (k, g, exp)
        for f in ("sum", "mean", "std"):
            assert math.isclose(g[f], exp[f], rel_tol=1e-9, abs_tol=1e-6), (k, f, g, exp)


def compute_hopping(
    records: Mapping[int, Sequence[SourceRow]],
    size_ms: int,
    step_ms: int,
    grace_ms: int,
    flush: bool = False,
    max_ts_ahead_ms: int = DEFAULT_MAX_TS_AHEAD_MS,
) -> tuple[dict[tuple[str, int, int], dict[str, float]], set[tuple[int, int]]]:
    """orders.revenue-hopping's windows (those closed by each partition's final watermark, or
    all if `flush`), and the orders late for every one of their hopping windows: an order
    counts in each of its windows whose end is past the watermark when it arrives."""
    groups: dict[tuple[str, int, int], list[float]] = defaultdict(list)
    window_partition: dict[tuple[str, int, int], int] = {}
    final_wm: dict[int, int] = {}
    late: set[tuple[int, int]] = set()
    for p, recs in records.items():
        max_ts: int | None = None
        for row in recs:
            offset = row[0]
            try:
                order = parse_order(_record(p, row), max_ts_ahead_ms)
            except InvalidRecord:
                continue
            max_ts = order.ts if max_ts is None else max(max_ts, order.ts)
            last = order.ts - order.ts % step_ms
            landed = False
            for start in range(last - size_ms + step_ms, last + 1, step_ms):
                if start + size_ms > max_ts - grace_ms:
                    wkey = (order.product_id, start, start + size_ms)
                    groups[wkey].append(order.total)
                    window_partition[wkey] = p
                    landed = True
            if not landed:
                late.add((p, offset))
        if max_ts is not None:
            final_wm[p] = max_ts - grace_ms
    windows = {
        wkey: window_statistics(values)
        for wkey, values in groups.items()
        if flush or wkey[2] <= final_wm[window_partition[wkey]]
    }
    return windows, late


def window_statistics(values: list[float]) -> dict[str, float]:
    """A window's fields, computed directly (exact sums, population std)."""
    return {
        "count": len(values),
        "sum": math.fsum(values),
        "mean": statistics.fmean(values),
        "min": min(values),
        "max": max(values),
        "std": statistics.pstdev(values),
    }
