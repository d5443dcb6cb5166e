"""The top-products pipeline and the orders pipeline's window reports, without a broker."""

from __future__ import annotations

import json

import pytest

from agents.base import SourceRecord
from agents.orders import DLQ, MAX_AMOUNT, MAX_QUANTITY, OrdersPipeline
from agents.product_trends import parse_window
from agents.quiet_products import QUIET_PRODUCTS
from agents.top_products import RANKING_STORE, TOP_PRODUCTS, TopProductsPipeline
from agents.window_reports import (
    BY_WINDOW,
    BY_WINDOW_KEY,
    MAX_TOTAL,
    RECORD_BYTES,
    parse_report,
    report_values,
)
from tables.partition_state import MemoryStore, PartitionState, StateError
from tables.quiet import QuietConfig


def order(i: int, product: str, ts: int, amount: float) -> bytes:
    return json.dumps(
        {
            "order_id": f"o{i}",
            "user_id": "u",
            "product_id": product,
            "category": "c",
            "amount": amount,
            "quantity": 1,
            "ts": ts,
        }
    ).encode()


def orders_partition(partition: int, rows: list[tuple[str, int, float]]) -> list[SourceRecord]:
    return [
        SourceRecord("orders", partition, i, None, p.encode(), order(i, p, ts, amount))
        for i, (p, ts, amount) in enumerate(rows)
    ]


def reports(out: object) -> list[bytes]:
    return [r.value for r in out.records if r.topic == BY_WINDOW]  # type: ignore[attr-defined]


def test_orders_report_closed_windows_and_passed_boundaries() -> None:
    pipeline = OrdersPipeline()
    state = PartitionState(MemoryStore(), 2)
    first = pipeline.process(state, orders_partition(2, [("a", 1_000, 2.0), ("b", 30_000, 1.0)]))
    (value,) = reports(first)  # the first watermark: a boundary passed
    assert json.loads(value) == {"src": 2, "from": None, "wm": 20_000, "w": []}
    assert all(r.key == BY_WINDOW_KEY and r.in_order for r in first.records if r.topic == BY_WINDOW)
    state.prepare(1)
    state.commit()
    rows = [("a", 40_000, 1.0), ("a", 80_000, 5.0)]  # watermark 30 s, then 70 s: [0, 60 s) closes
    src = [
        SourceRecord("orders", 2, 2 + i, None, r.key, r.value)
        for i, r in enumerate(orders_partition(2, rows))
    ]
    later = pipeline.process(state, src[:1])
    assert reports(later) == []  # 20 s → 30 s: no window boundary passed, nothing closed
    state.prepare(2)
    state.commit()
    (value,) = reports(pipeline.process(state, src[1:]))
    assert json.loads(value) == {
        "src": 2,
        "from": 30_000,
        "wm": 70_000,
        "w": [["a", 0, 60_000, 3.0, 2], ["b", 0, 60_000, 1.0, 1]],
    }


def test_a_big_report_is_cut_by_size_and_only_its_last_record_carries_the_watermark() -> None:
    windows = [("é" * 1024 + str(i), 0, 60_000, 1.0, 1) for i in range(500)]  # 6 KiB each
    values = report_values(1, 40, 99, windows)
    assert len(values) > 1 and all(len(v) <= RECORD_BYTES + 200 for v in values)
    parsed = [parse_report(v, 4, 60_000) for v in values]
    assert [p[2] for p in parsed] == [None] * (len(values) - 1) + [99]
    assert {p[1] for p in parsed} == {40}
    assert [w for p in parsed for w in p[3]] == windows


def test_reports_are_written_as_json_dumps_would() -> None:
    windows = [('p"\\é', 0, 60_000, 0.1, 3), ("q", -60_000, 0, 1e24, 1)]
    (value,) = report_values(0, None, -5, windows)
    want = {"src": 0, "from": None, "wm": -5, "w": [list(w) for w in windows]}
    assert value == json.dumps(want, separators=(",", ":")).encode()


def test_what_later_pipelines_accept_of_a_window_is_what_orders_can_add_up_to() -> None:
    assert MAX_AMOUNT * MAX_QUANTITY == MAX_TOTAL


@pytest.mark.parametrize("n", [1, 25, 26, 31, 64, 257])
def test_a_window_of_the_largest_orders_is_accepted_downstream_with_its_rounding(n: int) -> None:
    """The orders pipeline sums a window one order at a time: 26 orders of the largest total
    summed to 2.6000000000000003e+25, above 26 × 1e24, and top-products and product-trends
    dead-lettered the window and every other window of its report, so that which windows
    were ranked depended on how the orders were cut into batches."""
    biggest = {"user_id": "u", "product_id": "A", "category": "c", "amount": MAX_AMOUNT}
    rows = [{**biggest, "order_id": f"o{i}", "quantity": MAX_QUANTITY, "ts": i} for i in range(n)]
    rows.append({**biggest, "order_id": "later", "quantity": 1, "ts": 200_000})  # closes it
    batch = [
        SourceRecord("orders", 0, i, None, b"A", json.dumps(r).encode()) for i, r in enumerate(rows)
    ]
    out = OrdersPipeline().process(PartitionState(MemoryStore(), 0), batch)
    (window,) = [r for r in out.records if r.topic == "orders.revenue-1m"]
    (value,) = [r.value for r in out.records if r.topic == BY_WINDOW]
    assert json.loads(window.value or b"")["count"] == n
    assert parse_window(window.key, window.value, 60_000) is not None
    (closed,) = parse_report(value, 1, 60_000)[3]
    assert closed[3:] == (json.loads(window.value or b"")["sum"], n)


def test_a_window_total_beyond_what_its_orders_can_reach_is_refused() -> None:
    far = [["A", 0, 60_000, MAX_TOTAL * 3 * 1.001, 3]]
    with pytest.raises(ValueError, match="what orders can add up to"):
        parse_report(json.dumps({"src": 0, "from": None, "wm": 1, "w": far}).encode(), 1, 60_000)
    window = {"product_id": "A", "window_start": 0, "window_end": 60_000, "count": 3}
    with pytest.raises(ValueError, match="sum must be"):
        parse_window(b"A", json.dumps({**window, "sum": MAX_TOTAL * 3 * 1.001}).encode(), 60_000)


def report(
    offset: int, partition: int, wm: int | None, windows: list[list[object]], since: int | None = 0
) -> SourceRecord:
    value = json.dumps({"src": partition, "from": since, "wm": wm, "w": windows}).encode()
    return SourceRecord(BY_WINDOW, 0, offset, None, BY_WINDOW_KEY, value)


RUN = [
    report(0, 0, 60_000, [["a", 0, 60_000, 5.0, 2], ["b", 0, 60_000, 7.0, 1]]),
    report(1, 1, 30_000, []),
    report(2, 0, 60_000, [["a", 0, 60_000, 5.0, 2]]),  # re-sent after a crash upstream
    report(3, 1, 65_000, [["c", 0, 60_000, 6.0, 3], ["d", 0, 60_000, 1.0, 1]]),
    report(4, 1, 130_000, [["c", 60_000, 120_000, 2.0, 1]]),
    report(5, 0, 125_000, [["a", 60_000, 120_000, 4.0, 1]]),
]


def test_each_window_is_ranked_once_every_partition_passed_it() -> None:
    out = TopProductsPipeline(k=3, partitions=2).process(PartitionState(MemoryStore(), 0), RUN)
    ranked = [
        (r.key, json.loads(r.value), r.timestamp) for r in out.records if r.topic == TOP_PRODUCTS
    ]
    assert ranked == [
        (
            b"0",
            {
                "window_start": 0,
                "window_end": 60_000,
                "top": [
                    {"product_id": "b", "revenue": 7.0, "count": 1},
                    {"product_id": "c", "revenue": 6.0, "count": 3},
                    {"product_id": "a", "revenue": 5.0, "count": 2},
                ],
            },
            59_999,
        ),
        (
            b"60000",
            {
                "window_start": 60_000,
                "window_end": 120_000,
                "top": [
                    {"product_id": "a", "revenue": 4.0, "count": 1},
                    {"product_id": "c", "revenue": 2.0, "count": 1},
                ],
            },
            119_999,
        ),
    ]


@pytest.mark.parametrize("size", [1, 2, 4])
def test_batches_and_restarts_give_the_same_rankings(size: int) -> None:
    whole = TopProductsPipeline(k=3, partitions=2).process(PartitionState(MemoryStore(), 0), RUN)
    store = MemoryStore()
    split = []
    for at in range(0, len(RUN), size):
        state = PartitionState(store, 0)  # a restart between every batch
        out = TopProductsPipeline(k=3, partitions=2).process(state, RUN[at : at + size])
        state.prepare(RUN[min(at + size, len(RUN)) - 1].offset)
        state.commit()
        split += out.records
    assert [(r.key, r.value) for r in split] == [(r.key, r.value) for r in whole.records]
    assert len(whole.records) == 2
    left = {k for k in store.data if b"top-products" in k and not k.endswith(b"meta")}
    assert left == set()  # both windows emitted: nothing open is kept


@pytest.mark.parametrize(
    "value",
    [
        b"nope",
        b"[]",
        b'{"src": 9, "wm": 1, "w": []}',  # no such source partition
        b'{"src": 0, "wm": "1", "w": []}',
        b'{"src": 0, "wm": 1, "w": [["a", 10, 10, 1.0, 1]]}',  # empty window
        b'{"src": 0, "wm": 1, "w": [["a", 0, 10, -1.0, 1]]}',
        b'{"src": 0, "wm": 1, "w": [["a", 0, 10, 1.0, true]]}',
        b'{"src": 0, "wm": 1, "w": [["a", 0, 10, 1.0]]}',
        # a lone surrogate: no state key (quiet products') nor output key can hold it
        b'{"src": 0, "wm": 1, "w": [["a\\ud800", 0, 60000, 1.0, 1]]}',
    ],
)
def test_what_is_no_report_goes_to_the_dlq_and_the_pipeline_goes_on(value: bytes) -> None:
    bad = SourceRecord(BY_WINDOW, 0, 0, None, BY_WINDOW_KEY, value)
    good = [SourceRecord(BY_WINDOW, 0, 1 + r.offset, None, r.key, r.value) for r in RUN]
    out = TopProductsPipeline(k=3, partitions=2).process(
        PartitionState(MemoryStore(), 0), [bad, *good]
    )
    (dead,) = [r for r in out.records if r.topic == DLQ]
    assert dict(dead.headers)["kappa.error"] == b"bad_report" and dead.value == value
    assert len([r for r in out.records if r.topic == TOP_PRODUCTS]) == 2


def test_a_flush_emits_no_ranking() -> None:
    state = PartitionState(MemoryStore(), 0)
    pipeline = TopProductsPipeline(k=3, partitions=2)
    pipeline.process(state, RUN[:1])
    assert pipeline.flush(state).records == []


def test_a_batch_reads_and_writes_only_the_windows_it_touches_or_finishes() -> None:
    """Behind an idle partition windows pile up; a batch must not pay for all of them."""
    pipeline = TopProductsPipeline(k=3, partitions=2)
    state = PartitionState(MemoryStore(), 0)
    waiting = [["a", i * 60_000, (i + 1) * 60_000, 1.0, 1] for i in range(200)]
    pipeline.process(state, [report(0, 0, 200 * 60_000, waiting)])  # partition 1 idle
    state.prepare(0)
    state.commit()
    pipeline.process(state, [report(1, 0, 200 * 60_000, [["b", 0, 60_000, 2.0, 1]])])
    staged = [k for k in state._staged if b"top-products" in k]
    assert len(staged) == 2  # the touched window and the meta entry
    out = pipeline.process(state, [report(2, 1, 120_000, [])])  # partition 1 passes 2 windows
    assert [json.loads(r.value)["window_start"] for r in out.records] == [0, 60_000]
    assert json.loads(out.records[0].value)["top"][0]["product_id"] == "b"


def test_the_pipeline_says_and_counts_the_silences_of_its_reports() -> None:
    pipeline = TopProductsPipeline(k=3, partitions=1, quiet=QuietConfig(warmup_windows=2))
    state = PartitionState(MemoryStore(), 0)
    steady = [
        report(i, 0, (i + 1) * 60_000, [["a", i * 60_000, (i + 1) * 60_000, 9.0, 9]])
        for i in range(4)
    ]
    out = pipeline.process(state, [*steady, report(4, 0, 6 * 60_000, [])])
    (said,) = [r for r in out.records if r.topic == QUIET_PRODUCTS]
    assert json.loads(said.value)["product_id"] == "a" and out.counts.quiet == 1


FIRST_WINDOW = f"w{60_000 + (1 << 63):020d}:{1 << 63:020d}"  # [0, 60 s) in top-products


@pytest.mark.parametrize(
    "key,reports",
    [
        ("meta", [report(2, 0, 65_000, [])]),
        # a window a report touches (read); the same window become final (scanned)
        (FIRST_WINDOW, [report(2, 0, 65_000, [["c", 0, 60_000, 1.0, 1]])]),
        (FIRST_WINDOW, [report(2, 1, 70_000, [])]),
    ],
)
def test_a_stored_ranking_it_cannot_decode_stops_it_in_one_line(
    key: str, reports: list[SourceRecord]
) -> None:
    """The state's fault, not the report's: named, and the report is not dead-lettered."""
    pipeline = TopProductsPipeline(k=3, partitions=2)
    state = PartitionState(MemoryStore(), 0, pipeline="top-products")
    pipeline.process(
        state, [report(0, 0, 65_000, [["a", 0, 60_000, 5.0, 2]]), report(1, 1, 30_000, [])]
    )
    state.prepare(1)
    state.commit()
    assert state.get_values(RANKING_STORE, [key]) != [None]
    state.put_value(RANKING_STORE, key, b'{"wm": ')
    state.commit()
    with pytest.raises(StateError) as caught:
        pipeline.process(state, reports)
    assert str(caught.value).startswith(
        f"top-products partition 0: the stored top-products value of key '{key}' cannot be "
        "decoded (JSONDecodeError: "
    )
