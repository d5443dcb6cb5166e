"""orders.revenue-hopping: the orders pipeline's optional hopping windows, against a plain
computation of the same rule, however the stream is batched."""

from __future__ import annotations

import itertools
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import SourceRecord
from agents.orders import LATE, REVENUE, REVENUE_HOPPING, OrdersConfig, OrdersPipeline
from tables.aggregates import Moments
from tables.partition_state import MemoryStore, PartitionState
from tests.support.datasets import GOOD_ORDER

# Hopping windows end 2 to 6 s after an order, its tumbling one up to 10 s after: an order
# can be late for either kind alone.
SIZE, STEP, GRACE, TUMBLING = 6_000, 2_000, 3_000, 10_000


def _record(offset: int, product: str, ts: int, amount: float) -> SourceRecord:
    value = dict(GOOD_ORDER, product_id=product, ts=ts, amount=amount, quantity=1)
    return SourceRecord("orders", 0, offset, None, product.encode(), json.dumps(value).encode())


def _run(
    events: list[tuple[str, int, float]], cuts: list[int], since_ms: int | None = None
) -> tuple[dict[tuple[str, int], dict[str, object]], list[tuple[int, dict[str, bytes]]]]:
    """The pipeline over `events` in batches cut at `cuts`, then flushed: every hopping window
    emitted (by product and start), and the late copies (offset, headers)."""
    config = OrdersConfig(TUMBLING, GRACE, since_ms=since_ms, hopping=(SIZE, STEP))
    pipeline = OrdersPipeline(config)
    state = PartitionState(MemoryStore(), 0)
    records = [_record(i, *e) for i, e in enumerate(events)]
    windows: dict[tuple[str, int], dict[str, object]] = {}
    late: list[tuple[int, dict[str, bytes]]] = []
    bounds = [0, *sorted(set(cuts)), len(records)]
    outs = []
    for lo, hi in itertools.pairwise(bounds):
        if lo < hi:
            outs.append(pipeline.process(state, records[lo:hi]))
            state.prepare(hi - 1)
            state.commit()
    outs.append(pipeline.flush(state))
    for out in outs:
        for r in out.records:
            if r.topic == REVENUE_HOPPING:
                w = json.loads(r.value)
                assert (w["product_id"], w["window_start"]) not in windows  # emitted once
                windows[(w["product_id"], w["window_start"])] = w
            elif r.topic == LATE:
                late.append((r.source_offset, dict(r.headers)))
    return windows, late


def _reference(
    events: list[tuple[str, int, float]], since_ms: int | None = None
) -> tuple[dict[tuple[str, int], Moments], set[int], set[int]]:
    """Each hopping window's orders, by the rule: an order counts in each of its windows whose
    end is past the watermark (largest event time so far − grace) when it arrives; also the
    orders late for every hopping window, and those late for their tumbling window."""
    windows: dict[tuple[str, int], Moments] = {}
    hop_late: set[int] = set()
    tumbling_late: set[int] = set()
    stream_time = tumbling_time = None
    for i, (product, ts, amount) in enumerate(events):
        start_t = ts - ts % TUMBLING
        if since_ms is None or start_t >= since_ms:  # the tumbling windows' --since rule
            tumbling_time = ts if tumbling_time is None else max(tumbling_time, ts)
            if start_t + TUMBLING <= tumbling_time - GRACE:
                tumbling_late.add(i)
        if since_ms is not None and ts - ts % STEP < since_ms:
            continue  # in no hopping window starting at or after --since
        stream_time = ts if stream_time is None else max(stream_time, ts)
        landed = False
        for start in range(ts - ts % STEP - SIZE + STEP, ts + 1, STEP):
            if since_ms is not None and start < since_ms:
                continue
            if start + SIZE > stream_time - GRACE:
                windows.setdefault((product, start), Moments()).add(amount)
                landed = True
        if not landed:
            hop_late.add(i)
    return windows, hop_late, tumbling_late


_events = st.lists(
    st.tuples(
        st.sampled_from(["p1", "p2"]),
        st.integers(0, 120_000),
        st.sampled_from([1.0, 2.5, 10.0, 0.25]),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    events=_events,
    cuts=st.lists(st.integers(0, 40), max_size=6),
    since_ms=st.one_of(st.none(), st.integers(0, 60_000)),
)
def test_any_batching_gives_the_plain_computations_hopping_windows_and_late_orders(
    events: list[tuple[str, int, float]], cuts: list[int], since_ms: int | None
) -> None:
    windows, late = _run(events, cuts, since_ms)
    expected, hop_late, tumbling_late = _reference(events, since_ms)
    assert set(windows) == set(expected)
    for key, m in expected.items():
        w = windows[key]
        assert (w["window_end"], w["count"], w["sum"], w["min"], w["max"]) == (
            key[1] + SIZE,
            m.count,
            m.total,
            m.min,
            m.max,
        )
    said = [offset for offset, _ in late]
    # Each late order once, in source order: the same late topic however the stream is cut.
    assert said == sorted(tumbling_late | hop_late)
    # What each copy missed: every late order is marked, by the outputs it is missing from.
    late_for = {offset: headers.get("kappa.late-for") for offset, headers in late}
    assert late_for == {
        offset: {
            (True, False): b"orders.revenue-1m",
            (False, True): b"orders.revenue-hopping",
            (True, True): b"orders.revenue-1m,orders.revenue-hopping",
        }[(offset in tumbling_late, offset in hop_late)]
        for offset in tumbling_late | hop_late
    }


def test_an_order_counts_in_every_window_that_contains_it() -> None:
    windows, late = _run([("p1", 12_000, 2.0)], [])
    assert sorted(start for _, start in windows) == [8_000, 10_000, 12_000]
    assert all(w["count"] == 1 and w["sum"] == 2.0 for w in windows.values())
    assert not late


def test_an_order_late_for_one_kind_of_window_only_is_copied_once() -> None:
    """After 100,000 the watermark is 97,000. 91,500's hopping windows ended by 96,000 while
    its tumbling one, [90,000, 100,000), is open: copied, marked for the hopping windows.
    89,000's tumbling window ended at 90,000, and its last hopping one, [88,000, 94,000), too:
    late for both, copied once, marked for both. The copies are in source order, as they
    would be if each order came in a batch of its own."""
    events = [("p1", 100_000, 1.0), ("p1", 91_500, 1.0), ("p1", 89_000, 1.0)]
    _, late = _run(events, [])
    assert [(offset, headers.get("kappa.late-for")) for offset, headers in late] == [
        (1, b"orders.revenue-hopping"),
        (2, b"orders.revenue-1m,orders.revenue-hopping"),
    ]


def test_an_order_late_for_its_tumbling_window_only_says_so() -> None:
    """After 95,000 the watermark is 92,000: 89,000's tumbling window ended at 90,000, but
    its hopping window [88,000, 94,000) is open and counts it."""
    windows, late = _run([("p1", 95_000, 1.0), ("p1", 89_000, 3.0)], [])
    assert [(offset, headers.get("kappa.late-for")) for offset, headers in late] == [
        (1, b"orders.revenue-1m")
    ]
    assert windows[("p1", 88_000)]["sum"] == 3.0  # counted there


def test_without_hopping_settings_the_pipeline_writes_no_hopping_window() -> None:
    state = PartitionState(MemoryStore(), 0)
    records = [_record(i, "p1", ts, 1.0) for i, ts in enumerate((1_000, 200_000))]
    out = OrdersPipeline(OrdersConfig(TUMBLING, GRACE)).process(state, records)
    topics = {r.topic for r in out.records}
    assert REVENUE in topics and REVENUE_HOPPING not in topics
