"""orders.quiet-products from the window reports, without a broker: any batching and any
interleaving of the source partitions' reports gives the silences a plain computation gives."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.quiet_products import QUIET_PRODUCTS, QUIET_STORE, quiet_records, quiet_value
from agents.window_reports import Report
from tables.partition_state import MemoryStore, PartitionState, StateError
from tables.quiet import Activity, QuietConfig, QuietPoint
from tables.top_k import ClosedWindow

W = 60_000
CONFIG = QuietConfig(decay=0.5 ** (1 / 5), warmup_windows=2, p_quiet=0.05)

# A partition's history: per window index, the products with orders and their counts.
History = list[dict[str, int]]


def plain_silences(histories: dict[int, History]) -> dict[str, list[dict[str, object]]]:
    """Each product's windows folded one after the other: a silence is said when the next
    window starts at or after when it was due, or when the last watermark passed it."""
    said: dict[str, list[dict[str, object]]] = {}
    for partition, history in histories.items():
        activities: dict[str, Activity] = {}
        for i, products in enumerate(history):
            for product, count in sorted(products.items()):
                a = activities.get(product)
                if a is None:
                    activities[product] = Activity.first(
                        partition, i * W, (i + 1) * W, count, CONFIG
                    )
                    continue
                if a.due is not None and i * W >= a.due:
                    said.setdefault(product, []).append(_point(a.silence(product)))
                a.observe(partition, i * W, (i + 1) * W, count, CONFIG)
        end = len(history) * W  # the last watermark
        for product, a in activities.items():
            if a.due is not None and a.due <= end:
                said.setdefault(product, []).append(_point(a.silence(product)))
    return said


def _point(p: QuietPoint) -> dict[str, object]:
    return json.loads(quiet_value(p))  # type: ignore[no-any-return]


def reports_of(partition: int, history: History, cuts: list[int]) -> list[Report]:
    """The reports a partition's orders pipeline would send, one per batch: the windows it
    closed (ending after the last report's watermark, up to this one's) and its watermark."""
    bounds = sorted({c for c in cuts if 0 < c < len(history)} | {len(history)})
    out: list[Report] = []
    done = 0
    for b in bounds:
        windows: list[ClosedWindow] = [
            (product, i * W, (i + 1) * W, float(count), count)
            for i in range(done, b)
            for product, count in sorted(history[i].items())
        ]
        out.append((partition, None if done == 0 else done * W, b * W, windows))
        done = b
    return out


def run(batches: list[list[Report]]) -> dict[str, list[dict[str, object]]]:
    state = PartitionState(MemoryStore(), 0)
    said: dict[str, list[dict[str, object]]] = {}
    for n, batch in enumerate(batches):
        for r in quiet_records(state, CONFIG, batch):
            assert r.topic == QUIET_PRODUCTS
            point = json.loads(r.value)
            assert r.key == point["product_id"].encode() and r.timestamp == point["quiet_until"] - 1
            said.setdefault(point["product_id"], []).append(point)
        state.prepare(n)
        state.commit()
    return said


windows_st = st.lists(
    st.dictionaries(st.sampled_from(["a", "b", "c"]), st.integers(1, 6), max_size=3),
    min_size=1,
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(
    histories=st.lists(windows_st, min_size=1, max_size=3),
    cuts=st.lists(st.lists(st.integers(0, 40), max_size=12), min_size=3, max_size=3),
    order=st.randoms(use_true_random=False),
    batch_cuts=st.lists(st.integers(0, 120), max_size=10),
)
def test_any_batching_and_interleaving_gives_the_plain_silences(
    histories: list[History],
    cuts: list[list[int]],
    order: object,
    batch_cuts: list[int],
) -> None:
    # each product is read from one partition: its name carries it
    by_partition = {
        p: [{f"{name}{p}": c for name, c in window.items()} for window in history]
        for p, history in enumerate(histories)
    }
    queues = [reports_of(p, h, cuts[p]) for p, h in by_partition.items()]
    interleaved: list[Report] = []
    while any(queues):  # a random interleaving that keeps each partition's order
        q = order.choice([q for q in queues if q])  # type: ignore[attr-defined]
        interleaved.append(q.pop(0))
    bounds = sorted({c for c in batch_cuts if 0 < c < len(interleaved)})
    batches = [interleaved[a:b] for a, b in zip([0, *bounds], [*bounds, len(interleaved)])]
    assert run(batches) == plain_silences(by_partition)


def test_a_product_that_stops_selling_is_quiet_once_its_rate_makes_the_silence_unlikely() -> None:
    steady: History = [{"p": 3} for _ in range(6)] + [{} for _ in range(6)] + [{"p": 3}]
    said = run([reports_of(0, steady, list(range(13)))])
    (point,) = said["p"]
    # 3 orders a window: e^(-3g) < 0.05 from g = 1, so the first empty window makes it quiet
    assert point["last_window_start"] == 5 * W
    assert (point["quiet_from"], point["quiet_until"], point["windows"]) == (6 * W, 7 * W, 1)
    assert point["orders_per_window"] == 3.0 and point["expected_orders"] == 3.0


def test_a_report_re_sent_after_a_crash_says_nothing_again() -> None:
    history: History = [{"p": 2} for _ in range(4)] + [{}, {}, {}]
    reports = reports_of(0, history, [4])
    state = PartitionState(MemoryStore(), 0)
    first = quiet_records(state, CONFIG, reports)
    assert [json.loads(r.value)["product_id"] for r in first] == ["p"]
    state.prepare(0)
    state.commit()
    assert quiet_records(state, CONFIG, reports) == []


def test_a_silence_not_yet_passed_by_the_partition_waits() -> None:
    """Another partition far ahead does not make a product of a slower one quiet."""
    slow: History = [{"s": 3} for _ in range(3)]
    fast: History = [{"f": 3} for _ in range(30)]
    said = run([reports_of(0, slow, []) + reports_of(1, fast, [])])
    assert "s" not in said


@pytest.mark.parametrize("reported", [True, False])
def test_a_stored_activity_it_cannot_decode_stops_it_in_one_line(reported: bool) -> None:
    """Read for a product the batch reports, or for one whose awaited silence the watermark
    passes: either way the state's fault, named, not the report's."""
    state = PartitionState(MemoryStore(), 0, pipeline="top-products")
    steady: History = [{"p": 3, "q": 3} for _ in range(3)]
    quiet_records(state, CONFIG, reports_of(0, steady, []))
    state.prepare(0)
    state.commit()
    state.put_value(QUIET_STORE, "pp", Activity(0, 0, W, W).to_bytes()[:-1])
    state.commit()
    later = [{"p": 3} if reported else {}, {}]
    with pytest.raises(StateError) as caught:
        quiet_records(state, CONFIG, reports_of(0, [*steady, *later], [3])[1:])
    assert str(caught.value).startswith(
        "top-products partition 0: the stored quiet-products value of key 'pp' cannot be "
        "decoded (struct.error: "
    )
