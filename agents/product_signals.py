"""Per-product demand levels (clustering) and next-window direction (classification), from
the product-trends pipeline's points (`tables/signals.py`).

Source `orders.product-trends` is keyed by product, so a product's points arrive on one
partition in window order, each final window once (a point re-sent after a crash upstream is
skipped by its start). Each product's signals are therefore the same fold over the same
points, live or replayed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from agents.base import BatchOutput, OutRecord, Record, unapplied
from agents.orders import DLQ
from agents.product_trends import TRENDS, json_number
from agents.window_reports import json_object
from tables.partition_state import PartitionState
from tables.signals import SignalPoint, Signals, TrendInput

SIGNALS = "orders.product-signals"
SIGNALS_STORE = "product-signals"  # per product: its `Signals`
_NUMBER = (int, float)
_json_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


class ProductSignalsPipeline:
    name = "product-signals"
    source = TRENDS
    outputs = (SIGNALS, DLQ)
    dlq = DLQ

    def __init__(self, levels: int = 3, window_ms: int = 60_000) -> None:
        self.levels = levels
        self.window_ms = window_ms

    def process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        out = BatchOutput()
        counts = out.counts
        points: list[tuple[str, TrendInput]] = []
        for rec in unapplied(records, state.applied_offset, counts):
            try:
                points.append(parse_trend_point(rec.key, rec.value, self.window_ms))
            except ValueError as err:
                out.add_dead_letter(DLQ, rec, "bad_trend", str(err))
        if not points:
            return out
        products = list(dict.fromkeys(p for p, _ in points))
        signals = {
            p: Signals.from_bytes(raw) if raw is not None else Signals(self.levels)
            for p, raw in zip(products, state.get_values(SIGNALS_STORE, products))
        }
        changed: dict[str, None] = {}
        for product, t in points:
            point = signals[product].observe(t)
            if point is None:
                counts.skipped += 1  # re-sent
                continue
            changed[product] = None
            value = signal_value(product, point)
            out.records.append(OutRecord(SIGNALS, product.encode(), value, t.window_end - 1))
        for product in changed:
            state.put_value(SIGNALS_STORE, product, signals[product].to_bytes())
        return out

    def flush(self, state: PartitionState) -> BatchOutput:
        return BatchOutput()  # nothing open: every point is final when its window is


def parse_trend_point(
    key: bytes | None, raw: bytes | None, window_ms: int
) -> tuple[str, TrendInput]:
    """(product, what the signals read) of a trend point as product-trends writes it;
    ValueError naming what is wrong with anything else."""
    d = json_object(raw)
    product, start, end = d.get("product_id"), d.get("window_start"), d.get("window_end")
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
    numbers = []
    for name in ("revenue", "moving_avg", "forecast_next"):
        v = d.get(name)
        try:
            x = float(v) if type(v) in _NUMBER else math.nan
        except OverflowError:
            x = math.inf
        if not 0.0 <= x < math.inf:
            raise ValueError(f"{name} must be a finite number >= 0")
        numbers.append(x)
    return product, TrendInput(start, end, *numbers)


def signal_value(product: str, p: SignalPoint) -> bytes:
    """Deterministic JSON (fixed field order): a re-sent point is byte-identical."""
    return (
        f'{{"product_id":{_json_str(product)},"window_start":{p.window_start},'
        f'"window_end":{p.window_end},"revenue":{json_number(p.revenue)},"level":{p.level},'
        f'"level_revenue":{json_number(p.level_revenue)},"levels":{p.levels},'
        f'"p_up_next":{json_number(p.p_up_next)},"accuracy":{json_number(p.accuracy)},"scored":{p.scored}}}'
    ).encode()


def settled_signals(state: PartitionState, product: str) -> dict[str, Any] | None:
    """A product's demand levels and direction model as of the last acknowledged batch; None
    if it has no point yet."""
    raw = state.settled_values(SIGNALS_STORE, [product])[0]
    if raw is None:
        return None
    s = Signals.from_bytes(raw)
    return {
        "product_id": product,
        "last_window_start": s.last_start,
        "level_revenues": [math.expm1(c) for c in s.kmeans.centres],
        "level_counts": list(s.kmeans.counts),
        "p_up_next": s.classifier.probability(s.pending) if s.pending is not None else None,
        "accuracy": s.classifier.accuracy,
        "scored": s.classifier.scored,
    }
