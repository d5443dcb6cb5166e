"""Per-product analytics over the closed revenue windows: moving average, cumulative orders
and revenue, a forecast of the next window, anomalies (windows far off the forecast), and the
signals over those points: demand level (clustering) and next-window direction (classification).

Source `orders.revenue-1m` is keyed by product, so a product's windows arrive on one partition
in window order. Only final windows count: a replay's provisional ones (header
`kappa.provisional`) and the running updates of `KAPPA_EMIT_UPDATES` (`"final":false`) are
skipped, and a window re-sent after a crash upstream is skipped by its start. Each product's
trend and signals are therefore the same fold over the same windows, live or replayed
(`tables/trends.py`, `tables/signals.py`). The signals are folded here, from the points as they
are made, rather than in a pipeline of their own reading them back: that would decode every
point again and cost a replay a whole stage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from agents.base import BatchOutput, OutRecord, Record, json_number, json_str, unapplied
from agents.orders import DLQ, PROVISIONAL_HEADER, REVENUE
from agents.window_reports import MAX_WINDOW_COUNT, json_object, total_orders_can_reach
from tables.partition_state import PartitionState
from tables.signals import SignalPoint, Signals, TrendInput
from tables.trends import Trend, TrendConfig, TrendPoint

TRENDS = "orders.product-trends"
ANOMALIES = "orders.anomalies"
SIGNALS = "orders.product-signals"
TRENDS_STORE = "product-trends"  # per product: its `Trend`
SIGNALS_STORE = "product-signals"  # per product: its `Signals`

Window = tuple[str, int, int, int, float]  # product, start, end, count, sum


class ProductTrendsPipeline:
    name = "product-trends"
    source = REVENUE
    outputs = (TRENDS, ANOMALIES, SIGNALS, DLQ)
    dlq = DLQ

    def __init__(
        self, config: TrendConfig | None = None, window_ms: int = 60_000, levels: int = 3
    ) -> None:
        self.config = config or TrendConfig()
        self.window_ms = window_ms
        self.levels = levels  # demand levels learned per product

    def process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        out = BatchOutput()
        counts = out.counts
        windows: list[Window] = []
        for rec in unapplied(records, state.applied_offset, counts):
            if any(k == PROVISIONAL_HEADER for k, _ in rec.headers or ()):
                counts.skipped += 1
                continue
            try:
                window = parse_window(rec.key, rec.value, self.window_ms)
            except ValueError as err:
                out.add_dead_letter(DLQ, rec, "bad_window", str(err))
                continue
            if window is None:
                counts.skipped += 1  # a running update, not a closed window
                continue
            windows.append(window)
        if not windows:
            return out
        products = list(dict.fromkeys(w[0] for w in windows))
        stored = state.get_values(TRENDS_STORE, products)
        try:
            trends = {
                p: Trend.from_bytes(raw) if raw is not None else Trend()
                for p, raw in zip(products, stored)
            }
        except Exception as e:  # the state's fault, not the windows': see `raise_undecodable`
            state.raise_undecodable(TRENDS_STORE, zip(products, stored), Trend.from_bytes, e)
        stored = state.get_values(SIGNALS_STORE, products)
        try:
            signals = {
                p: Signals.from_bytes(raw) if raw is not None else Signals(self.levels)
                for p, raw in zip(products, stored)
            }
        except Exception as e:
            state.raise_undecodable(SIGNALS_STORE, zip(products, stored), Signals.from_bytes, e)
        changed: dict[str, None] = {}
        records = out.records
        for product, start, end, count, value in windows:
            point = trends[product].observe(start, end, count, value, self.config)
            if point is None:
                counts.skipped += 1  # re-sent
                continue
            changed[product] = None
            key, body = product.encode(), trend_value(product, point)
            records.append(OutRecord(TRENDS, key, body, end - 1))
            if point.anomaly:
                records.append(OutRecord(ANOMALIES, key, body, end - 1))
                counts.anomalies += 1
            signal = signals[product].observe(signal_input(point))
            if signal is not None:
                records.append(OutRecord(SIGNALS, key, signal_value(product, signal), end - 1))
        for product in changed:
            state.put_value(TRENDS_STORE, product, trends[product].to_bytes())
            state.put_value(SIGNALS_STORE, product, signals[product].to_bytes())
        return out

    def flush(self, state: PartitionState) -> BatchOutput:
        return BatchOutput()  # nothing open: every point is final when its window is


def parse_window(key: bytes | None, raw: bytes | None, window_ms: int) -> Window | None:
    """A revenue window as the orders pipeline writes it; None for a running update.

    Raises ValueError naming what is wrong with anything else, including values beyond what
    the orders pipeline can emit (which would overflow the trend's sums and state).
    """
    d = json_object(raw)
    product, start, end, count, value = (
        d.get("product_id"),
        d.get("window_start"),
        d.get("window_end"),
        d.get("count"),
        d.get("sum"),
    )
    if type(product) is not str or not product or key != product.encode():
        raise ValueError("product_id missing, or not the record key")
    if not (
        type(start) is int
        and type(end) is int
        and end - start == window_ms
        and start % window_ms == 0
        and abs(start) < 1 << 62
    ):
        raise ValueError(f"not a window of {window_ms} ms aligned to the epoch")
    if type(count) is not int or not 1 <= count <= MAX_WINDOW_COUNT:
        raise ValueError(f"count must be an integer from 1 to {MAX_WINDOW_COUNT}")
    try:
        total = float(value) if type(value) in (int, float) else math.nan
    except OverflowError:
        total = math.inf
    if not total_orders_can_reach(total, count):
        raise ValueError("sum must be a number from 0 to count × 1e24")
    if d.get("final", True) is False:
        return None
    return product, start, end, count, total


def trend_value(product: str, p: TrendPoint) -> bytes:
    """Deterministic JSON (fixed field order), so a re-sent point is byte-identical.

    Formatted directly: the bytes `json.dumps(trend_dict(...), separators=(",", ":"))` gives
    (floats by repr, a non-finite one as null), at a fraction of the cost.
    """
    return (
        f'{{"product_id":{json_str(product)},"window_start":{p.window_start},'
        f'"window_end":{p.window_end},"count":{p.count},"revenue":{json_number(p.value)},'
        f'"moving_avg":{json_number(p.moving_average)},"windows":{p.windows},'
        f'"cum_orders":{p.cumulative_count},"cum_revenue":{json_number(p.cumulative_value)},'
        f'"expected":{json_number(p.expected)},"forecast_next":{json_number(p.forecast_next)},'
        f'"zscore":{json_number(p.zscore)},"anomaly":{"true" if p.anomaly else "false"}}}'
    ).encode()


def _finite(x: float | None) -> float | None:
    """A float JSON can hold (no NaN or infinity), else null: never reached by windows
    `parse_window` accepts, but a point must never stop its product's trend."""
    return x if x is None or math.isfinite(x) else None


def signal_input(p: TrendPoint) -> TrendInput:
    """What the signals read of a trend point: the values its record carries (a non-finite
    one, which bounded windows never give, as 0 rather than the record's null)."""
    return TrendInput(
        p.window_start,
        p.window_end,
        p.value if math.isfinite(p.value) else 0.0,
        p.moving_average if math.isfinite(p.moving_average) else 0.0,
        p.forecast_next if math.isfinite(p.forecast_next) else 0.0,
    )


def signal_value(product: str, p: SignalPoint) -> bytes:
    """Deterministic JSON (fixed field order), formatted directly as `trend_value` is."""
    return (
        f'{{"product_id":{json_str(product)},"window_start":{p.window_start},'
        f'"window_end":{p.window_end},"revenue":{json_number(p.revenue)},"level":{p.level},'
        f'"level_revenue":{json_number(p.level_revenue)},"levels":{p.levels},'
        f'"p_up_next":{json_number(p.p_up_next)},"accuracy":{json_number(p.accuracy)},'
        f'"scored":{p.scored}}}'
    ).encode()


def trend_dict(product: str, p: TrendPoint) -> dict[str, Any]:
    return {
        "product_id": product,
        "window_start": p.window_start,
        "window_end": p.window_end,
        "count": p.count,
        "revenue": _finite(p.value),
        "moving_avg": _finite(p.moving_average),
        "windows": p.windows,
        "cum_orders": p.cumulative_count,
        "cum_revenue": _finite(p.cumulative_value),
        "expected": _finite(p.expected),
        "forecast_next": _finite(p.forecast_next),
        "zscore": _finite(p.zscore),
        "anomaly": p.anomaly,
    }


def settled_trend(state: PartitionState, product: str) -> dict[str, Any] | None:
    """A product's trend as of the last acknowledged batch; None if it has no closed window."""
    raw = state.settled_values(TRENDS_STORE, [product])[0]
    if raw is None:
        return None
    try:
        trend = Trend.from_bytes(raw)
    except Exception as e:  # the state's fault: see `raise_undecodable`
        state.raise_undecodable(TRENDS_STORE, [(product, raw)], Trend.from_bytes, e)
    return {"product_id": product, **trend.summary()}


def settled_signals(state: PartitionState, product: str) -> dict[str, Any] | None:
    """A product's demand levels and direction model as of the last acknowledged batch; None
    if it has no closed window."""
    raw = state.settled_values(SIGNALS_STORE, [product])[0]
    if raw is None:
        return None
    try:
        s = Signals.from_bytes(raw)
    except Exception as e:  # the state's fault: see `raise_undecodable`
        state.raise_undecodable(SIGNALS_STORE, [(product, raw)], Signals.from_bytes, e)
    return {
        "product_id": product,
        "last_window_start": s.last_start,
        "level_revenues": [math.expm1(c) for c in s.kmeans.centres],
        "level_counts": list(s.kmeans.counts),
        "p_up_next": s.classifier.probability(s.pending) if s.pending is not None else None,
        "accuracy": s.classifier.accuracy,
        "scored": s.classifier.scored,
    }
