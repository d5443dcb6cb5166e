"""The whole topology under the topology test driver (no broker): any batching, crash and
restart points (with and without the local state) and interleaving of partitions end in the
outputs of one straight run, and the revenue windows are the plain reference computation's."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from agents.orders import DLQ, LATE, REVENUE, REVENUE_HOPPING
from agents.product_trends import ANOMALIES, SIGNALS, TRENDS
from agents.quiet_products import QUIET_PRODUCTS
from agents.top_products import TOP_PRODUCTS
from agents.user_totals import USER_TOTALS
from app.batch_producer import KeyPartitioner
from replay.latest import decode_entry
from tables.partition_state import PartitionState
from tables.rocks import RocksStore
from tests.support.reference import Reference, assert_windows_equal, compute, compute_hopping
from tests.support.topology_driver import (
    Batch,
    Commit,
    Crash,
    CrashPoint,
    Idle,
    Restart,
    Step,
    TopologyDriver,
)

PARTITIONS = 3
WINDOW_MS, GRACE_MS = 20_000, 5_000
STEP_S = 7  # event time between orders (s)
# Small windows, a short warm-up and a low bar, so that a few dozen orders close windows, rank
# them, and flag anomalies and quiet products.
ENV = {
    "KAPPA_PARTITIONS": str(PARTITIONS),
    "KAPPA_WINDOW_MS": str(WINDOW_MS),
    "KAPPA_GRACE_MS": str(GRACE_MS),
    "KAPPA_TREND_WINDOWS": "2",
    "KAPPA_ANOMALY_WARMUP": "2",
    "KAPPA_ANOMALY_Z": "1.0",
    "KAPPA_QUIET_P": "0.3",
    "KAPPA_TOP_K": "2",
}
HOPPING_MS = (40_000, 20_000)  # size, step
# The other way of emitting: running window values on every change, and hopping windows too.
UPDATES_AND_HOPPING = {
    "KAPPA_EMIT_UPDATES": "true",
    "KAPPA_HOPPING_SIZE_MS": str(HOPPING_MS[0]),
    "KAPPA_HOPPING_STEP_MS": str(HOPPING_MS[1]),
}
START_MS = 1_700_000_000_000
PER_PARTITION = 1
PIPELINES = ("orders", "user-totals", "product-trends", "top-products")
UPSERTED = (REVENUE, REVENUE_HOPPING, USER_TOTALS, TOP_PRODUCTS, TRENDS, SIGNALS, QUIET_PRODUCTS)
COPIES = (DLQ, LATE, ANOMALIES)


def _products() -> list[str]:
    """`PER_PARTITION` product ids landing in each partition of `orders` (top-products ranks a
    window only once every source partition's watermark passed it). Few products, so that each
    has enough windows for trends, anomalies and silences."""
    partitioner = KeyPartitioner()
    found: dict[int, list[str]] = {p: [] for p in range(PARTITIONS)}
    i = 0
    while any(len(ids) < PER_PARTITION for ids in found.values()):
        pid = f"p{i}"
        ids = found[partitioner(pid.encode(), list(range(PARTITIONS)))]
        if len(ids) < PER_PARTITION:
            ids.append(pid)
        i += 1
    return [pid for ids in found.values() for pid in ids]


PRODUCTS = _products()

# One order: (product, user, amount in cents, how far (s) its event time is off the stream's
# steady pace, behind: disorder, late; what is wrong with it: `ahead`, an event time years
# after its record's timestamp, which the default KAPPA_MAX_TS_AHEAD_MS dead-letters).
_order = st.tuples(
    st.sampled_from(PRODUCTS),
    st.sampled_from(["u0", "u1", "u2"]),
    st.integers(1, 5_000),
    st.integers(-40, 3),
    st.sampled_from(["ok"] * 12 + ["not_json", "missing_field", "key_mismatch", "ahead"]),
)
FAR_MS = 4_102_358_400_000  # 2099-12-31: a valid ts, far after its record's timestamp


def _input(orders: list[tuple[str, str, int, int, str]]) -> list[tuple[bytes, bytes, int]]:
    out = []
    for i, (product, user, cents, off_s, fault) in enumerate(orders):
        ts = START_MS + (i * STEP_S + off_s) * 1_000
        value: dict[str, Any] = {
            "order_id": f"o{i}",
            "user_id": user,
            "product_id": product,
            "category": "c",
            "amount": cents / 100,
            "quantity": 1 + i % 3,
            "ts": ts,
        }
        key = product.encode()
        if fault == "ahead":  # the record keeps its timestamp on the stream's pace
            value["ts"] = FAR_MS + i
        if fault == "missing_field":
            del value["user_id"]
        elif fault == "key_mismatch":
            key = b"other"
        raw = b"{not json" if fault == "not_json" else json.dumps(value).encode()
        out.append((key, raw, ts))
    return out


# Batches of one to several records of some partitions; the orders pipeline, upstream of the
# others, is drawn as often as they are together, and batches more often than anything else.
_counts = st.dictionaries(
    st.integers(0, PARTITIONS - 1), st.integers(1, 8), min_size=1, max_size=PARTITIONS
)
_crash = st.builds(
    CrashPoint,
    st.integers(0, 1),
    st.sampled_from([-1, 0, 1, 2, 5, 10, 21]),
    st.integers(0, 2),  # partitions committed before it, when all landed
)
_pipeline = st.sampled_from(("orders",) * (len(PIPELINES) - 1) + PIPELINES[1:])
_step: st.SearchStrategy[Step] = st.one_of(
    *[st.builds(Batch, _pipeline, _counts)] * 4,
    st.builds(Batch, _pipeline, _counts, _crash),
    st.builds(Idle, _pipeline, st.none() | _crash),
    st.builds(Commit, _pipeline),
    st.builds(Crash, _pipeline),
    st.builds(Restart, _pipeline, st.booleans()),
)
_plan = st.lists(_step, min_size=20, max_size=50)


def _run(
    records: list[tuple[bytes, bytes, int]], plan: list[Step], env: dict[str, str] | None = None
) -> Any:
    """The outputs of `plan` then every pipeline restarted where down and run to the end (in
    a directory of its own: hypothesis runs many examples in one test call)."""
    with tempfile.TemporaryDirectory(prefix="kappa-driver-") as state_dir:
        driver = TopologyDriver(Path(state_dir), {**ENV, **(env or {})})
        try:
            return _outputs(driver, records, plan)
        finally:
            driver.close()


def _outputs(
    driver: TopologyDriver, records: list[tuple[bytes, bytes, int]], plan: list[Step]
) -> Any:
    driver.pipe("orders", records)
    driver.run(plan)
    driver.run_to_end()
    upserted = {t: driver.latest(t) for t in UPSERTED}
    copies = {t: driver.distinct(t) for t in COPIES}
    source = {
        p: [(r.offset, r.key, r.value, r.timestamp) for r in driver.log.records("orders", p)]
        for p in range(PARTITIONS)
    }
    return upserted, copies, source


def _final(latest: dict[Any, bytes]) -> list[dict[str, Any]]:
    """The result fields of the final latest values (not those of windows still open)."""
    decoded = [decode_entry(stored) for stored in latest.values()]
    return [fields for fields, provisional in decoded if not provisional]


def _windows(latest: dict[Any, bytes]) -> dict[tuple[str, int, int], dict[str, float]]:
    return {(f["product_id"], f["window_start"], f["window_end"]): f for f in _final(latest)}


@pytest.mark.parametrize("env", [{}, UPDATES_AND_HOPPING], ids=["final", "updates-hopping"])
@settings(max_examples=20, deadline=None)
@given(
    orders=st.lists(_order, min_size=20, max_size=60),
    plan=_plan,
)
def test_any_batching_crashes_and_interleaving_end_in_the_straight_runs_outputs(
    env: dict[str, str], orders: list[tuple[str, str, int, int, str]], plan: list[Step]
) -> None:
    records = _input(orders)
    straight, straight_copies, source = _run(records, [], env)
    missing_before = _offsets_missing()
    got, got_copies, _ = _run(records, plan, env)
    assert _offsets_missing() == missing_before  # no plan passes over a source record
    for topic in UPSERTED:
        assert got[topic] == straight[topic], topic
    for topic in COPIES:
        assert got_copies[topic] == straight_copies[topic], topic
    ref = compute(source, WINDOW_MS, GRACE_MS)  # KAPPA_MAX_TS_AHEAD_MS's default too
    assert_windows_equal(_windows(straight[REVENUE]), ref)
    ahead = sum(1 for order in orders if order[4] == "ahead")
    assert list(ref.dlq.values()).count("timestamp_ahead") == ahead
    if env:
        hopping, _ = compute_hopping(source, *HOPPING_MS, GRACE_MS)
        assert_windows_equal(_windows(straight[REVENUE_HOPPING]), Reference(windows=hopping))
    totals = {f["user_id"]: f for f in _final(straight[USER_TOTALS])}
    assert set(totals) == set(ref.user_totals)
    for user, (n, spend) in ref.user_totals.items():
        assert totals[user]["orders"] == n
        assert math.isclose(totals[user]["spend"], spend, rel_tol=1e-9, abs_tol=1e-9)


def _offsets_missing() -> float:
    """Source offsets any pipeline passed over with no record, over every version so far."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "kappa_source_offsets_missing"
        for sample in metric.samples
        if sample.name.endswith("_total")
    )


def _orders(n: int) -> list[tuple[bytes, bytes, int]]:
    return _input([(PRODUCTS[i % len(PRODUCTS)], f"u{i % 3}", 100 + i, 0, "ok") for i in range(n)])


def _all(driver: TopologyDriver) -> dict[int, int]:
    return {p: driver.log.end("orders", p) for p in range(PARTITIONS)}


def test_a_crash_after_the_acknowledged_send_sends_the_batch_again_and_counts_it_once(
    tmp_path: Path,
) -> None:
    straight = TopologyDriver(tmp_path / "straight", ENV)
    straight.pipe("orders", _orders(30))
    straight.run_to_end()
    driver = TopologyDriver(tmp_path / "crashed", ENV)
    driver.pipe("orders", _orders(30))
    driver.run([Batch("orders", _all(driver), CrashPoint(0, -1))])
    assert driver.runners["orders"] is None  # crashed after the outputs landed, before commit
    sent = len(driver.records(REVENUE))
    assert sent == len(straight.records(REVENUE))
    driver.run([Restart("orders")])
    assert driver.applied_offset("orders", 0) == -1  # nothing committed: read again
    driver.run_to_end()
    assert len(driver.records(REVENUE)) == 2 * sent  # sent again, the same records
    for topic in UPSERTED:
        assert driver.latest(topic) == straight.latest(topic), topic
    straight.close()
    driver.close()


def test_a_crash_midway_lands_only_the_groups_it_names(tmp_path: Path) -> None:
    driver = TopologyDriver(tmp_path, ENV)
    driver.pipe("orders", _orders(30))
    driver.run([Batch("orders", _all(driver), CrashPoint(0, 0))])
    outputs = {"orders.revenue-1m", "orders.by-user", "orders.by-window"}
    assert not any(driver.records(t) for t in outputs)
    driver.run([Restart("orders"), Batch("orders", _all(driver), CrashPoint(0, 0b1))])
    landed = [t for t in outputs if driver.records(t)]
    assert len(landed) == 1 and len({r.partition for r in driver.records(landed[0])}) == 1
    driver.close()


def test_a_lost_local_state_is_restored_from_the_changelog_and_nothing_is_read_again(
    tmp_path: Path,
) -> None:
    driver = TopologyDriver(tmp_path, ENV)
    driver.pipe("orders", _orders(30))
    ends = _all(driver)
    driver.run([Batch("orders", ends), Idle("orders"), Commit("orders")])
    sent = len(driver.records(REVENUE))
    driver.run([Restart("orders", lose_local_state=True)])
    assert not (driver.topology.state_root() / "orders").exists()
    assert [driver.applied_offset("orders", p) for p in ends] == [n - 1 for n in ends.values()]
    driver.run_to_end()
    assert len(driver.records(REVENUE)) == sent
    driver.close()


def test_a_crash_between_two_partitions_commits_leaves_only_the_first_committed(
    tmp_path: Path,
) -> None:
    driver = TopologyDriver(tmp_path, ENV)
    driver.pipe("orders", _orders(30))
    half = {p: n // 2 for p, n in _all(driver).items()}
    # The second batch's send carries the first's held changelog entries; as each partition
    # commits, those entries reach its store.
    driver.run([Batch("orders", half), Batch("orders", half, CrashPoint(0, -1, committed=1))])
    assert driver.runners["orders"] is None
    pipeline = driver.pipelines["orders"]
    applied = []
    for p in sorted(half):
        store = RocksStore(driver.topology.state_path(pipeline, p))
        applied.append(PartitionState(store, p).applied_offset)
        store.close()
    assert applied == [half[0] - 1, -1, -1]
    driver.close()
