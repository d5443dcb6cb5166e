"""The guard of stream time against a far-future event time: an order whose `ts` is more than
`max_ts_ahead_ms` after its own Kafka record's timestamp is dead-lettered (`timestamp_ahead`)
and moves nothing, on the quick path and on the general one alike."""

from __future__ import annotations

import json
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import BatchOutput, SourceRecord
from agents.orders import (
    BY_USER,
    DLQ,
    LATE,
    OrdersConfig,
    OrdersPipeline,
    quick_order,
)
from tables.partition_state import MemoryStore, PartitionState
from tests.support.datasets import GOOD_ORDER
from tests.support.state import state_contents

DAY = 86_400_000
STAMP = 1_700_000_000_000  # the records' Kafka timestamp (CreateTime: when produced)
FAR = 4_102_358_400_000  # 2099-12-31: valid, but 76 years after its record
PATHS = ("quick", "general")
CONFIGS = {  # the guard as the README recommends it (off by default)
    "tumbling": OrdersConfig(max_ts_ahead_ms=DAY),
    "hopping, updates, since": OrdersConfig(
        emit_updates=True, hopping=(120_000, 60_000), since_ms=STAMP - 120_000, max_ts_ahead_ms=DAY
    ),
}


def _value(ts: int, path: str, user: str = "u1") -> bytes:
    """An order the quick path takes whole, or (`general`) one only `parse_order` converts: a
    quantity sent as a string."""
    quantity: object = 2 if path == "quick" else "2"
    return json.dumps({**GOOD_ORDER, "ts": ts, "quantity": quantity, "user_id": user}).encode()


def _rec(offset: int, ts: int, stamp: int | None, path: str = "quick") -> SourceRecord:
    return SourceRecord("orders", 0, offset, stamp, b"p1", _value(ts, path))


def test_the_two_kinds_of_order_take_the_two_paths() -> None:
    assert quick_order(_value(STAMP, "quick"), b"p1") is not None
    assert quick_order(_value(STAMP, "general"), b"p1") is None


def _process(
    config: OrdersConfig, *batches: list[SourceRecord]
) -> tuple[BatchOutput, MemoryStore, PartitionState]:
    """The batches in turn, each committed; the outputs of all, the store and the state."""
    store = MemoryStore()
    state = PartitionState(store, 0, new_origin=lambda: b"o" * 16)
    pipeline = OrdersPipeline(config)
    out = BatchOutput()
    for batch in batches:
        out.extend(pipeline.process(state, batch))
        state.prepare(batch[-1].offset)
        state.commit()
    return out, store, state


def _reasons(out: BatchOutput) -> list[str]:
    return [dict(r.headers)["kappa.error"].decode() for r in out.records if r.topic == DLQ]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize(
    ("ts", "stamp", "max_ahead", "refused"),
    [
        (STAMP + DAY, STAMP, DAY, False),  # just inside the bound
        (STAMP + DAY + 1, STAMP, DAY, True),  # just past it
        (FAR, STAMP, DAY, True),
        (STAMP + 1, STAMP, 1, False),
        (STAMP + 2, STAMP, 1, True),
        (FAR, STAMP, 0, False),  # 0: the guard is off
        (FAR, None, DAY, False),  # a record without a timestamp is not checked
        (FAR, -1, DAY, False),  # nor one stamped -1 (Kafka's "no timestamp")
        (STAMP - DAY * 365, STAMP, DAY, False),  # an old event, as a replay of history has
    ],
)
def test_an_order_too_far_ahead_of_its_record_is_dead_lettered_on_either_path(
    path: str, ts: int, stamp: int | None, max_ahead: int, refused: bool
) -> None:
    out, _, state = _process(OrdersConfig(max_ts_ahead_ms=max_ahead), [_rec(0, ts, stamp, path)])
    if refused:
        assert _reasons(out) == ["timestamp_ahead"]
        assert out.counts.dlq_reasons == {"timestamp_ahead": 1}
        (copy,) = out.records  # nothing else: no window, no user total
        detail = dict(copy.headers)["kappa.error.detail"].decode()
        assert detail.startswith(f"ts {ts} (") and f"record's timestamp {stamp} (" in detail
        assert copy.value == _rec(0, ts, stamp, path).value and copy.source_offset == 0
        assert state.stream_time_ms() is None
    else:
        assert not _reasons(out) and out.counts.dlq == 0
        assert state.stream_time_ms() == ts
        assert [r.topic for r in out.records if r.topic == BY_USER] == [BY_USER]


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@pytest.mark.parametrize("path", PATHS)
def test_a_far_future_order_moves_no_stream_time_window_or_user_total(
    config: OrdersConfig, path: str
) -> None:
    """After it, the partition's orders are on time, as if it had never been sent; in one batch
    or in batches of their own."""
    first, last = _rec(0, STAMP, STAMP), _rec(2, STAMP + 30_000, STAMP + 30_000, path)
    far = _rec(1, FAR, STAMP + 1_000, path)
    for batches in ([[first, far, last]], [[first], [far], [last]]):
        out, store, state = _process(config, *batches)
        assert _reasons(out) == ["timestamp_ahead"]
        assert not [r for r in out.records if r.topic == LATE]
        assert state.stream_time_ms() == STAMP + 30_000
        (*_, total) = [json.loads(r.value or b"") for r in out.records if r.topic == BY_USER]
        assert (total["orders"], total["ts"]) == (2, STAMP + 30_000)
        # Outputs and state are those of the same batches without it.
        without, without_store, _ = _process(
            config, *([r for r in b if r is not far] for b in batches if b != [far])
        )
        assert [r for r in out.records if r.topic != DLQ] == without.records
        assert state_contents(store) == state_contents(without_store)


_stamps = st.one_of(
    st.none(),
    st.sampled_from([-1, 0, STAMP - DAY - 1, STAMP - DAY, STAMP - 1, STAMP]),
    st.integers(STAMP - 2 * DAY, STAMP + DAY),
)
_times = st.one_of(
    st.integers(STAMP - DAY, STAMP + 2 * DAY),
    st.sampled_from([0, DAY, DAY + 1, FAR, 4_102_444_799_999]),
)
_orders = st.tuples(
    _times, _stamps, st.sampled_from(PATHS), st.sampled_from(["u1", "u2"]), st.booleans()
)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@settings(max_examples=100, deadline=None)
@given(
    orders=st.lists(_orders, max_size=12),
    max_ahead=st.sampled_from([0, 1, 60_000, DAY]),
    cut=st.integers(0, 12),
)
def test_the_quick_path_and_the_general_one_agree_on_the_guard(
    config: OrdersConfig,
    orders: list[tuple[int, int | None, str, str, bool]],
    max_ahead: int,
    cut: int,
) -> None:
    """The same batches, with and without the quick path (every record through
    `parse_order`): the same outputs, DLQ reasons and state."""
    records = [
        SourceRecord("orders", 0, i, stamp, b"p1" if keyed else b"p2", _value(ts, path, user))
        for i, (ts, stamp, path, user, keyed) in enumerate(orders)
    ]
    if not records:
        return
    config = OrdersConfig(
        emit_updates=config.emit_updates,
        since_ms=config.since_ms,
        hopping=config.hopping,
        max_ts_ahead_ms=max_ahead,
    )
    batches = [b for b in (records[:cut], records[cut:]) if b]
    quick, quick_store, _ = _process(config, *batches)
    with mock.patch("agents.orders.quick_order", return_value=None):
        general, general_store, _ = _process(config, *batches)
    assert quick.records == general.records
    assert quick.counts == general.counts
    assert state_contents(quick_store) == state_contents(general_store)
