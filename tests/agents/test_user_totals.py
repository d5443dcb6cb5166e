"""The user-totals pipeline without a broker: newest value per source partition, its state,
and forwards it cannot read going to the DLQ."""

from __future__ import annotations

import json

import pytest

from agents.base import SourceRecord
from agents.orders import BY_USER, MAX_AMOUNT, MAX_QUANTITY, OrdersPipeline
from agents.user_totals import USER_TOTALS, UserTotalsPipeline
from tables.partition_state import MemoryStore, PartitionState, StateError
from tests.support.datasets import GOOD_ORDER


def rec(value: dict[str, object], offset: int = 0) -> SourceRecord:
    """An order on partition 0, keyed by its product as the orders pipeline requires."""
    return SourceRecord("orders", 0, offset, None, b"p1", json.dumps(value).encode())


def order() -> dict[str, object]:
    return dict(GOOD_ORDER)


def test_user_totals_count_a_forwarded_order_once() -> None:
    orders = OrdersPipeline().process(PartitionState(MemoryStore(), 0), [rec(order(), offset=7)])
    fwd = [r for r in orders.records if r.topic == BY_USER]
    src = [SourceRecord(BY_USER, 0, i, None, r.key, r.value) for i, r in enumerate(fwd + fwd)]
    out = UserTotalsPipeline().process(PartitionState(MemoryStore(), 0), src)
    (total,) = [r for r in out.records if r.topic == USER_TOTALS]
    assert json.loads(total.value) == {"user_id": "u1", "orders": 1, "spend": 5.0}
    assert out.counts.skipped == 1


def test_user_totals_take_the_newest_running_value_per_source_partition() -> None:
    """Forwards are absolute running totals: re-sent or re-batched ones never add up twice."""

    def fwd(p: int, offset: int, orders: int, spend: float) -> bytes:
        return json.dumps(
            {"user_id": "u", "src": [p, offset], "orders": orders, "spend": spend, "ts": 1}
        ).encode()

    values = [fwd(0, 10, 2, 4.0), fwd(1, 5, 1, 1.5), fwd(0, 8, 1, 2.0), fwd(0, 20, 3, 7.0)]
    src = [SourceRecord(BY_USER, 0, i, None, b"u", v) for i, v in enumerate(values)]
    out = UserTotalsPipeline().process(PartitionState(MemoryStore(), 0), src)
    last = [r for r in out.records if r.topic == USER_TOTALS][-1]
    assert json.loads(last.value) == {"user_id": "u", "orders": 4, "spend": 8.5}
    assert out.counts.skipped == 1  # the stale (0, 8) forward


def test_state_written_as_json_by_an_earlier_version_is_read_and_rewritten_binary() -> None:
    """Existing state directories and changelogs need no migration: both pipelines read the
    JSON values earlier versions stored, and go on from them exactly."""
    orders_state = PartitionState(MemoryStore(), 0)
    orders_state.put_value("user-partials", "u1", b"[2,7.5,1700000000000]")
    orders_state.commit()
    out = OrdersPipeline().process(orders_state, [rec(order(), offset=3)])
    (fwd,) = [json.loads(r.value) for r in out.records if r.topic == BY_USER]
    assert (fwd["orders"], fwd["spend"]) == (3, 12.5)

    totals_state = PartitionState(MemoryStore(), 0)
    totals_state.put_value("user-totals", "u", b'{"0": [10, 2, 4.0, 1], "1": [5, 1, 1.5, 1]}')
    totals_state.commit()
    value = json.dumps({"user_id": "u", "src": [0, 20], "orders": 3, "spend": 7.0, "ts": 2})
    src = [SourceRecord(BY_USER, 0, 0, None, b"u", value.encode())]
    out = UserTotalsPipeline().process(totals_state, src)
    (total,) = [json.loads(r.value) for r in out.records if r.topic == USER_TOTALS]
    assert total == {"user_id": "u", "orders": 4, "spend": 8.5}
    (raw,) = totals_state.get_values("user-totals", ["u"])
    assert raw is not None and raw[0] == 1  # rewritten in the binary format


@pytest.mark.parametrize("stored", [b"\x01\x00\x00", b"", b"{not json"])
def test_stored_totals_it_cannot_decode_stop_it_in_one_line_instead_of_the_dlq(
    stored: bytes,
) -> None:
    """The state's fault, not the forward's: a replay into fresh state would count it."""
    state = PartitionState(MemoryStore(), 1, pipeline="user-totals")
    state.put_value("user-totals", "u", stored)
    state.commit()
    value = json.dumps({"user_id": "u", "src": [0, 20], "orders": 3, "spend": 7.0, "ts": 2})
    with pytest.raises(StateError) as caught:
        UserTotalsPipeline().process(
            state, [SourceRecord(BY_USER, 1, 0, None, b"u", value.encode())]
        )
    assert str(caught.value).startswith(
        "user-totals partition 1: the stored user-totals value of key 'u' cannot be decoded ("
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"src": [2**31, 1]},  # a partition number the stored format cannot hold
        {"src": [0, 2**63]},
        {"orders": -1},
        {"ts": 2**63},
        {"user_id": 7},  # not a string: once crashed the pipeline on `.encode()`
        {"user_id": "\ud800"},  # JSON can carry a lone surrogate: no UTF-8 key, once a crash
        {"user_id": ""},
        # spend is a sum of amounts >= 0: these were summed and written out as NaN/Infinity
        {"spend": float("nan")},
        {"spend": float("inf")},
        {"spend": -1.0},
        {"spend": 1e300},  # two such once summed to Infinity
        # typed only as the orders pipeline writes them: "12" once read as partition 1, offset 2
        {"src": "12"},
        {"src": [0, 1, 2]},
        {"src": [0.0, 1]},
        {"orders": True},
        {"orders": "3"},
        {"spend": "1.0"},
        {"ts": 1.5},
    ],
)
def test_a_forward_outside_what_the_state_can_hold_goes_to_the_dlq(fields: dict) -> None:
    value = {"user_id": "u", "src": [0, 1], "orders": 1, "spend": 1.0, "ts": 1, **fields}
    out = UserTotalsPipeline().process(
        PartitionState(MemoryStore(), 0),
        [SourceRecord(BY_USER, 0, 0, None, b"u", json.dumps(value).encode())],
    )
    assert [dict(r.headers)["kappa.error"] for r in out.records] == [b"bad_forward"]


def test_the_forwards_of_the_largest_orders_are_accepted_with_their_rounding() -> None:
    """A user's spend is summed one order at a time, each addition rounded: its bound allows
    for that, as for a window's (`agents/window_reports.total_orders_can_reach`)."""
    biggest = {**order(), "amount": MAX_AMOUNT, "quantity": MAX_QUANTITY}
    rows = [{**biggest, "order_id": f"o{i}", "ts": i} for i in range(300)]
    out = OrdersPipeline().process(
        PartitionState(MemoryStore(), 0), [rec(r, offset=i) for i, r in enumerate(rows)]
    )
    fwd = [r for r in out.records if r.topic == BY_USER]
    src = [SourceRecord(BY_USER, 0, i, None, r.key, r.value) for i, r in enumerate(fwd)]
    totals = UserTotalsPipeline().process(PartitionState(MemoryStore(), 0), src)
    assert totals.counts.dlq == 0
    (last,) = [r for r in totals.records if r.topic == USER_TOTALS][-1:]
    assert json.loads(last.value)["orders"] == 300


def test_a_running_total_from_before_amounts_were_bounded_is_still_counted() -> None:
    """Releases before 94a07b2 took any amount: a user's stored running total from then is
    above what bounded orders reach, and its forwards must not go to the DLQ for ever."""
    value = {"user_id": "u", "src": [0, 1], "orders": 2, "spend": 1e26, "ts": 1}
    out = UserTotalsPipeline().process(
        PartitionState(MemoryStore(), 0),
        [SourceRecord(BY_USER, 0, 0, None, b"u", json.dumps(value).encode())],
    )
    (total,) = out.records
    assert (total.topic, json.loads(total.value)["spend"]) == (USER_TOTALS, 1e26)


def test_a_deeply_nested_forward_goes_to_the_dlq() -> None:
    """The JSON decoder gives up on it with RecursionError, which once stopped the pipeline."""
    bad = b"[" * 100_000 + b"]" * 100_000
    out = UserTotalsPipeline().process(
        PartitionState(MemoryStore(), 0), [SourceRecord(BY_USER, 0, 0, None, b"u", bad)]
    )
    assert [dict(r.headers)["kappa.error"] for r in out.records] == [b"bad_forward"]


def test_a_forward_with_an_impossible_number_goes_to_the_dlq() -> None:
    bad = b'{"user_id":"u","src":[0,1],"orders":1,"spend":1' + b"0" * 400 + b',"ts":1}'
    out = UserTotalsPipeline().process(
        PartitionState(MemoryStore(), 0), [SourceRecord(BY_USER, 0, 0, None, b"u", bad)]
    )
    assert [dict(r.headers)["kappa.error"] for r in out.records] == [b"bad_forward"]


def test_user_totals_json_is_exactly_what_json_dumps_gives() -> None:
    value = json.dumps(
        {"user_id": 'u"\u00e9', "src": [0, 1], "orders": 3, "spend": 0.1 + 0.2, "ts": 1}
    ).encode()
    out = UserTotalsPipeline().process(
        PartitionState(MemoryStore(), 0), [SourceRecord(BY_USER, 0, 0, None, b"u", value)]
    )
    (total,) = [r for r in out.records if r.topic == USER_TOTALS]
    want = {"user_id": 'u"\u00e9', "orders": 3, "spend": 0.1 + 0.2}
    assert total.value == json.dumps(want, separators=(",", ":")).encode()
