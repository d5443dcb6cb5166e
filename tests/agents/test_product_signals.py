"""The product-signals pipeline without a broker: it folds product-trends' points, sends what
it cannot read to the DLQ, and gives the same records however the points were batched."""

from __future__ import annotations

import json

import pytest

from agents.base import SourceRecord
from agents.orders import DLQ, REVENUE
from agents.product_signals import (
    SIGNALS,
    ProductSignalsPipeline,
    settled_signals,
    signal_value,
)
from agents.product_trends import TRENDS, ProductTrendsPipeline
from tables.partition_state import MemoryStore, PartitionState
from tables.signals import SignalPoint

SIZE = 60_000


def trend_records(totals: dict[str, list[float]]) -> list[SourceRecord]:
    """What product-trends writes for these windows (the contract between the two)."""
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
            src.append(
                SourceRecord(
                    REVENUE, 0, len(src), None, product.encode(), json.dumps(body).encode()
                )
            )
    out = ProductTrendsPipeline().process(PartitionState(MemoryStore(), 0), src)
    return [
        SourceRecord(TRENDS, 0, i, None, r.key, r.value)
        for i, r in enumerate(r for r in out.records if r.topic == TRENDS)
    ]


def signals(out: object) -> list[dict[str, object]]:
    return [json.loads(r.value) for r in out.records if r.topic == SIGNALS]  # type: ignore[attr-defined]


def test_each_trend_point_gets_its_level_and_direction() -> None:
    src = trend_records({"p1": [10.0, 100.0, 12.0, 95.0, 11.0, 105.0]})
    out = ProductSignalsPipeline(levels=2).process(PartitionState(MemoryStore(), 0), src)
    got = signals(out)
    assert [g["window_start"] for g in got] == [i * SIZE for i in range(6)]
    assert [g["level"] for g in got] == [0, 1, 0, 1, 0, 1]  # a quiet and a busy regime
    assert [g["levels"] for g in got] == [1, 2, 2, 2, 2, 2]
    assert [g["scored"] for g in got] == [0, 1, 2, 3, 4, 5]
    assert got[0]["accuracy"] is None and got[0]["p_up_next"] == 0.5
    assert all(0.0 <= g["p_up_next"] <= 1.0 for g in got)  # type: ignore[operator]
    assert all(
        r.key == b"p1" and r.timestamp == json.loads(r.value)["window_end"] - 1 for r in out.records
    )


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (b"not json", b"p1"),
        (b'{"product_id":"p2","window_start":0,"window_end":60000}', b"p1"),
        (
            b'{"product_id":"p1","window_start":1,"window_end":60001,"revenue":1.0,'
            b'"moving_avg":1.0,"forecast_next":1.0}',
            b"p1",
        ),
        (
            b'{"product_id":"p1","window_start":0,"window_end":60000,"revenue":null,'
            b'"moving_avg":1.0,"forecast_next":1.0}',
            b"p1",
        ),
        (
            b'{"product_id":"p1","window_start":0,"window_end":60000,"revenue":1.0,'
            b'"moving_avg":-1.0,"forecast_next":1.0}',
            b"p1",
        ),
        (
            b'{"product_id":"p1","window_start":0,"window_end":60000,"revenue":1.0,'
            b'"moving_avg":1.0,"forecast_next":1' + b"0" * 400 + b"}",
            b"p1",
        ),
    ],
)
def test_what_is_no_trend_point_goes_to_the_dlq_and_the_pipeline_goes_on(
    value: bytes, key: bytes
) -> None:
    good = trend_records({"p1": [5.0]})[0]
    src = [
        SourceRecord(TRENDS, 0, 0, None, key, value),
        SourceRecord(TRENDS, 0, 1, None, b"p1", good.value),
    ]
    out = ProductSignalsPipeline().process(PartitionState(MemoryStore(), 0), src)
    (dead,) = [r for r in out.records if r.topic == DLQ]
    assert dict(dead.headers)["kappa.error"] == b"bad_trend"
    assert dead.value == value and dead.source_offset == 0
    assert [g["window_start"] for g in signals(out)] == [0]


def test_batches_restarts_and_resent_points_give_the_same_records_as_one_batch() -> None:
    src = trend_records(
        {"p1": [float(i * 3 % 7) for i in range(12)], "p2": [1.0 + i for i in range(12)]}
    )
    whole = ProductSignalsPipeline().process(PartitionState(MemoryStore(), 0), src)
    store = MemoryStore()
    split: list[bytes | None] = []
    for at in range(0, len(src), 5):
        state = PartitionState(store, 0)  # a restart between every batch
        out = ProductSignalsPipeline().process(state, src[at : at + 5])
        state.prepare(src[min(at + 5, len(src)) - 1].offset)
        state.commit()
        split.extend(r.value for r in out.records)
    assert split == [r.value for r in whole.records]
    resent = [
        SourceRecord(TRENDS, 0, len(src) + i, None, r.key, r.value) for i, r in enumerate(src)
    ]
    again = ProductSignalsPipeline().process(PartitionState(store, 0), resent)  # re-sent upstream
    assert not again.records and again.counts.skipped == len(src)


def test_the_settled_signals_are_queryable() -> None:
    state = PartitionState(MemoryStore(), 0)
    src = trend_records({"p1": [4.0, 40.0, 5.0]})
    ProductSignalsPipeline().process(state, src)
    assert settled_signals(state, "p1") is None  # staged, not yet acknowledged
    state.prepare(2)
    state.commit()
    found = settled_signals(state, "p1")
    assert found is not None
    assert (found["product_id"], found["last_window_start"], found["scored"]) == ("p1", 2 * SIZE, 2)
    assert found["level_revenues"] == pytest.approx([4.0, 5.0, 40.0])
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
