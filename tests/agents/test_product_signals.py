"""The product-trends pipeline's signals without a broker: each closed window's demand level
and direction, the fold of the pipeline's own trend points, the same however the windows were
batched or the worker restarted."""

from __future__ import annotations

import json

import pytest

from agents.base import SourceRecord
from agents.orders import REVENUE
from agents.product_trends import (
    SIGNALS,
    TRENDS,
    ProductTrendsPipeline,
    settled_signals,
    signal_value,
)
from tables.partition_state import MemoryStore, PartitionState
from tables.signals import SignalPoint, Signals, TrendInput

SIZE = 60_000


def windows(totals: dict[str, list[float]]) -> list[SourceRecord]:
    """The orders pipeline's closed windows of these revenues, product by product."""
    src = []
    for product, values in totals.items():
        for i, total in enumerate(values):
            body = {
                "product_id": product,
                "window_start": i * SIZE,
                "window_end": (i + 1) * SIZE,
                "count": 2,
                "sum": total,
            }
            value = json.dumps(body).encode()
            src.append(SourceRecord(REVENUE, 0, len(src), None, product.encode(), value))
    return src


def of(out: object, topic: str = SIGNALS) -> list[dict[str, object]]:
    return [json.loads(r.value) for r in out.records if r.topic == topic]  # type: ignore[attr-defined]


def test_each_closed_window_gets_its_level_and_direction() -> None:
    out = ProductTrendsPipeline(levels=2).process(
        PartitionState(MemoryStore(), 0), windows({"p1": [10.0, 100.0, 12.0, 95.0, 11.0, 105.0]})
    )
    got = of(out)
    assert [g["window_start"] for g in got] == [i * SIZE for i in range(6)]
    assert [g["level"] for g in got] == [0, 1, 0, 1, 0, 1]  # a quiet and a busy regime
    assert [g["levels"] for g in got] == [1, 2, 2, 2, 2, 2]
    assert [g["scored"] for g in got] == [0, 1, 2, 3, 4, 5]
    assert got[0]["accuracy"] is None and got[0]["p_up_next"] == 0.5
    signal_records = [r for r in out.records if r.topic == SIGNALS]
    assert all(
        r.key == b"p1" and r.timestamp == (i + 1) * SIZE - 1 for i, r in enumerate(signal_records)
    )


def test_signals_are_the_fold_of_the_trend_points_as_written() -> None:
    """What a reader of `orders.product-trends` would compute from its records."""
    src = windows({"p1": [float(i * 7 % 11) for i in range(15)], "p2": [3.0] * 5})
    out = ProductTrendsPipeline().process(PartitionState(MemoryStore(), 0), src)
    per_product: dict[str, Signals] = {}
    want = []
    for t in of(out, TRENDS):
        s = per_product.setdefault(str(t["product_id"]), Signals())
        point = s.observe(
            TrendInput(
                t["window_start"],  # type: ignore[arg-type]
                t["window_end"],  # type: ignore[arg-type]
                t["revenue"],  # type: ignore[arg-type]
                t["moving_avg"],  # type: ignore[arg-type]
                t["forecast_next"],  # type: ignore[arg-type]
            )
        )
        assert point is not None
        want.append(json.loads(signal_value(str(t["product_id"]), point)))
    assert of(out) == want


def test_batches_restarts_and_resent_windows_give_the_same_records_as_one_batch() -> None:
    src = windows({"p1": [float(i * 3 % 7) for i in range(12)], "p2": [1.0 + i for i in range(12)]})
    whole = ProductTrendsPipeline().process(PartitionState(MemoryStore(), 0), src)
    store = MemoryStore()
    split: list[bytes | None] = []
    for at in range(0, len(src), 5):
        state = PartitionState(store, 0)  # a restart between every batch
        out = ProductTrendsPipeline().process(state, src[at : at + 5])
        state.prepare(src[min(at + 5, len(src)) - 1].offset)
        state.commit()
        split.extend(r.value for r in out.records)
    assert split == [r.value for r in whole.records]
    resent = [
        SourceRecord(REVENUE, 0, len(src) + i, None, r.key, r.value) for i, r in enumerate(src)
    ]
    again = ProductTrendsPipeline().process(PartitionState(store, 0), resent)  # re-sent upstream
    assert not again.records and again.counts.skipped == len(src)


def test_the_settled_signals_are_queryable() -> None:
    state = PartitionState(MemoryStore(), 0)
    ProductTrendsPipeline().process(state, windows({"p1": [4.0, 40.0, 5.0]}))
    assert settled_signals(state, "p1") is None  # staged, not yet acknowledged
    state.prepare(2)
    state.commit()
    found = settled_signals(state, "p1")
    assert found is not None
    assert (found["product_id"], found["last_window_start"], found["scored"]) == ("p1", 2 * SIZE, 2)
    assert found["level_revenues"] == pytest.approx([4.0, 5.0, 40.0])
    assert found["level_counts"] == [1, 1, 1]
    assert settled_signals(state, "p2") is None


@pytest.mark.parametrize(
    "point",
    [
        SignalPoint(0, 60_000, 2.5, 0, 2.5, 1, 0.5, None, 0),
        SignalPoint(60_000, 120_000, 1e-300, 2, 1e24, 3, 0.25, 0.75, 4),
    ],
)
def test_points_are_written_as_json_dumps_would(point: SignalPoint) -> None:
    product = 'p"\\é\U0001f600'
    want = {
        "product_id": product,
        "window_start": point.window_start,
        "window_end": point.window_end,
        "revenue": point.revenue,
        "level": point.level,
        "level_revenue": point.level_revenue,
        "levels": point.levels,
        "p_up_next": point.p_up_next,
        "accuracy": point.accuracy,
        "scored": point.scored,
    }
    assert signal_value(product, point) == json.dumps(want, separators=(",", ":")).encode()
