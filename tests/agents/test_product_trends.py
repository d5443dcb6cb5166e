"""The product-trends pipeline without a broker: it folds the orders pipeline's closed windows,
skips what is not a final window, sends what it cannot read to the DLQ, and gives the same
points however the windows were batched."""

from __future__ import annotations

import json

import pytest

from agents.base import SourceRecord
from agents.orders import DLQ, PROVISIONAL_HEADER, REVENUE, OrdersConfig, OrdersPipeline
from agents.product_trends import (
    ANOMALIES,
    SIGNALS_STORE,
    TRENDS,
    TRENDS_STORE,
    ProductTrendsPipeline,
    settled_trend,
    trend_dict,
    trend_value,
)
from tables.partition_state import MemoryStore, PartitionState, StateError
from tables.trends import TrendConfig, TrendPoint, trend_points

SIZE = 60_000
CONFIG = TrendConfig(average_windows=2, half_life_windows=3.0, anomaly_z=3.0, warmup_windows=3)


def window(product: str, index: int, total: float, count: int = 1, **extra: object) -> bytes:
    d = {
        "product_id": product,
        "window_start": index * SIZE,
        "window_end": (index + 1) * SIZE,
        "count": count,
        "sum": total,
        "mean": total / max(count, 1),
        "min": 0.0,
        "max": total,
        "std": 0.0,
        **extra,
    }
    return json.dumps(d, separators=(",", ":")).encode()


def records(values: list[bytes], key: bytes = b"p1", start: int = 0) -> list[SourceRecord]:
    return [SourceRecord(REVENUE, 0, start + i, i, key, v) for i, v in enumerate(values)]


def points(out: list[SourceRecord] | object, topic: str = TRENDS) -> list[dict[str, object]]:
    return [json.loads(r.value) for r in out.records if r.topic == topic]  # type: ignore[attr-defined]


def test_points_are_the_fold_of_the_closed_windows() -> None:
    totals = [5.0, 7.0, 6.0, 8.0]
    out = ProductTrendsPipeline(CONFIG).process(
        PartitionState(MemoryStore(), 0),
        records([window("p1", i, t, 2) for i, t in enumerate(totals)]),
    )
    got = points(out)
    want = trend_points([(i * SIZE, (i + 1) * SIZE, 2, t) for i, t in enumerate(totals)], CONFIG)
    assert [(g["window_start"], g["revenue"], g["cum_orders"]) for g in got] == [
        (p.window_start, p.value, p.cumulative_count) for p in want
    ]
    assert [g["forecast_next"] for g in got] == [p.forecast_next for p in want]
    assert [g["moving_avg"] for g in got] == [5.0, 6.0, 6.5, 7.0]
    assert got[0]["expected"] is None and got[0]["zscore"] is None
    assert all(
        r.key == b"p1" and r.timestamp == json.loads(r.value)["window_end"] - 1 for r in out.records
    )


def test_the_orders_pipelines_own_windows_are_read() -> None:
    """The contract with the orders pipeline: what it emits, this reads (final or not)."""
    for emit_updates in (False, True):
        orders = OrdersPipeline(OrdersConfig(emit_updates=emit_updates))
        src = [
            SourceRecord("orders", 0, i, None, b"p1", json.dumps(o).encode())
            for i, o in enumerate(
                {
                    "order_id": f"o{i}",
                    "user_id": "u",
                    "product_id": "p1",
                    "category": "c",
                    "amount": 2.0,
                    "quantity": 1,
                    "ts": ts,
                }
                for i, ts in enumerate([1_000, 61_000, 62_000, 200_000])
            )
        ]
        emitted = [
            r
            for r in orders.process(PartitionState(MemoryStore(), 0), src).records
            if r.topic == REVENUE
        ]
        revenue = [
            SourceRecord(REVENUE, 0, i, r.timestamp, r.key, r.value, r.headers)
            for i, r in enumerate(emitted)
        ]
        out = ProductTrendsPipeline(CONFIG).process(PartitionState(MemoryStore(), 0), revenue)
        assert [(p["window_start"], p["count"], p["revenue"]) for p in points(out)] == [
            (0, 1, 2.0),
            (60_000, 2, 4.0),
        ], emit_updates
        assert out.counts.dlq == 0


def test_provisional_windows_updates_and_resent_windows_are_skipped() -> None:
    pipeline = ProductTrendsPipeline(CONFIG)
    values = [
        window("p1", 0, 3.0),
        window("p1", 1, 4.0, final=False),  # a running update
        window("p1", 1, 4.0, final=True),
        window("p1", 1, 4.0, final=True),  # re-sent after a crash upstream
        window("p1", 2, 9.0),  # a replay's flush: still open
    ]
    src = records(values)
    src[-1].headers = [(PROVISIONAL_HEADER, b"1")]
    out = pipeline.process(PartitionState(MemoryStore(), 0), src)
    assert [p["window_start"] for p in points(out)] == [0, 60_000]
    assert (out.counts.events, out.counts.skipped, out.counts.dlq) == (5, 3, 0)


@pytest.mark.parametrize(
    ("value", "key"),
    [
        (b"not json", b"p1"),
        (b"[1]", b"p1"),
        (window("p2", 0, 1.0), b"p1"),  # not the record's key
        (
            json.dumps(
                {"product_id": "p1", "window_start": 0, "window_end": 0, "count": 1, "sum": 1.0}
            ).encode(),
            b"p1",
        ),
        (window("p1", 0, 1.0, count=0), b"p1"),
        (window("p1", 0, 1.0, count=True), b"p1"),
        (window("p1", 0, 1.0).replace(b'"window_end":60000', b'"window_end":60001'), b"p1"),
        (window("p1", 0, 1.0).replace(b'"window_start":0', b'"window_start":1'), b"p1"),
        (window("p1", 0, 1.0).replace(b'"sum":1.0', b'"sum":1' + b"0" * 400), b"p1"),
        (window("p1", 0, 1.0).replace(b'"sum":1.0', b'"sum":1e300'), b"p1"),
        (window("p1", 0, 1.0, count=2**62), b"p1"),
        (window("p2", 0, 1.0, final=False), b"p1"),  # an update, but not of this key's product
        (window("p1", 0, -1.0), b"p1"),
        (window("p1", 0, 1.0).replace(b'"sum":1.0', b'"sum":"1"'), b"p1"),
        (window("p1", 0, 1.0), None),
    ],
)
def test_what_is_no_window_goes_to_the_dlq_and_the_pipeline_goes_on(
    value: bytes, key: bytes | None
) -> None:
    src = [*records([value], key=key), *records([window("p1", 5, 2.0)], start=1)]
    out = ProductTrendsPipeline(CONFIG).process(PartitionState(MemoryStore(), 0), src)
    (dead,) = [r for r in out.records if r.topic == DLQ]
    assert dict(dead.headers)["kappa.error"] == b"bad_window"
    assert dead.value == value and dead.source_offset == 0
    assert [p["window_start"] for p in points(out)] == [5 * SIZE]


@pytest.mark.parametrize("table", [TRENDS_STORE, SIGNALS_STORE])
def test_a_stored_value_it_cannot_decode_stops_it_in_one_line_naming_where(table: str) -> None:
    """The state's fault, not the window's: dead-lettering the window would make the outputs
    differ from a replay's, which never meets the value."""
    state = PartitionState(MemoryStore(), 2, pipeline="product-trends")
    pipeline = ProductTrendsPipeline(CONFIG)
    pipeline.process(state, records([window("p1", 0, 5.0)]))
    state.prepare(0)
    state.commit()
    state.put_value(table, "p1", b"\x09not a state this release wrote")
    state.prepare(0)
    state.commit()
    with pytest.raises(StateError) as caught:
        pipeline.process(state, records([window("p1", 1, 6.0)], start=1))
    assert str(caught.value).startswith(
        f"product-trends partition 2: the stored {table} value of key 'p1' cannot be decoded ("
    )
    assert "\n" not in str(caught.value) and "restored from its changelog" in str(caught.value)


def test_anomalies_also_go_to_their_own_topic_and_are_counted() -> None:
    totals = [10.0, 11.0, 9.0, 10.5, 9.5, 10.0, 80.0]
    out = ProductTrendsPipeline(CONFIG).process(
        PartitionState(MemoryStore(), 0),
        records([window("p1", i, t) for i, t in enumerate(totals)]),
    )
    anomalies = points(out, ANOMALIES)
    assert [a["revenue"] for a in anomalies] == [80.0]
    assert anomalies[0] == points(out)[-1] and anomalies[0]["anomaly"] is True
    assert out.counts.anomalies == 1


def test_batches_and_restarts_give_the_same_points_as_one_batch() -> None:
    keyed = [
        (p, window(p, i, float(i * 3 % 7 + (p == "p2")))) for i in range(12) for p in ("p1", "p2")
    ]
    src = [SourceRecord(REVENUE, 0, i, None, p.encode(), v) for i, (p, v) in enumerate(keyed)]
    whole = ProductTrendsPipeline(CONFIG).process(PartitionState(MemoryStore(), 0), src)
    store = MemoryStore()
    split: list[bytes | None] = []
    for at in range(0, len(src), 5):
        state = PartitionState(store, 0)  # a restart between every batch
        out = ProductTrendsPipeline(CONFIG).process(state, src[at : at + 5])
        state.prepare(src[min(at + 5, len(src)) - 1].offset)
        state.commit()
        split.extend(r.value for r in out.records)
    assert split == [r.value for r in whole.records]
    again = ProductTrendsPipeline(CONFIG).process(PartitionState(store, 0), src)  # all applied
    assert not again.records and again.counts.skipped == len(src)


def test_the_settled_trend_is_queryable() -> None:
    state = PartitionState(MemoryStore(), 0)
    ProductTrendsPipeline(CONFIG).process(
        state, records([window("p1", i, 4.0 + 2 * i) for i in range(3)])
    )
    assert settled_trend(state, "p1") is None  # staged, not yet acknowledged
    state.prepare(2)
    state.commit()
    found = settled_trend(state, "p1")
    assert found is not None
    assert (found["product_id"], found["windows"], found["cum_revenue"]) == ("p1", 3, 18.0)
    assert found["forecast_next"] == pytest.approx(10.0)
    assert settled_trend(state, "p2") is None


@pytest.mark.parametrize(
    "point",
    [
        TrendPoint(0, 60_000, 1, 2.5, 2.5, 1, 1, 2.5, None, 2.5, None, False),
        TrendPoint(60_000, 120_000, 3, 1e-300, 0.1, 9, 40, 1e24, 3.0, 0.0, -2.25, True),
        TrendPoint(0, 60_000, 1, 1.0, 1.0, 2, 2, 2.0, 1.0, 1.0, float("inf"), True),
    ],
)
def test_points_are_written_as_json_dumps_would(point: TrendPoint) -> None:
    product = 'p"\\é\U0001f600'
    want = json.dumps(trend_dict(product, point), separators=(",", ":"), allow_nan=False)
    assert trend_value(product, point) == want.encode()
