"""The orders pipeline without a broker: cleaning, DLQ reasons, late routing, outputs."""

from __future__ import annotations

import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import SourceRecord
from agents.orders import (
    BY_USER,
    DLQ,
    LATE,
    REVENUE,
    USER_PARTIALS,
    OrdersPipeline,
    parse_order,
    quick_ahead_ms,
    quick_order,
)
from agents.user_state import encode_partial
from agents.user_totals import UserTotalsPipeline
from tables.cleaning import InvalidRecord
from tables.partition_state import MemoryStore, PartitionState, StateError
from tests.support.datasets import GOOD_ORDER as GOOD


def rec(
    value: object, key: bytes | None = b"p1", offset: int = 0, partition: int = 0
) -> SourceRecord:
    raw = value if isinstance(value, bytes) or value is None else json.dumps(value).encode()
    return SourceRecord("orders", partition, offset, None, key, raw)


def order(**changes: object) -> dict[str, object]:
    d = dict(GOOD)
    for k, v in changes.items():
        if v is ...:
            d.pop(k)
        else:
            d[k] = v
    return d


class Literal(str):
    """A number written into the JSON text as is."""


def with_literal(field: str, number: str) -> bytes:
    """An order whose `field` is the JSON number `number`, written as is."""
    return json.dumps(order(**{field: 0})).replace(f'"{field}": 0', f'"{field}": {number}').encode()


def test_valid_order_is_converted() -> None:
    o = parse_order(rec(order(amount="12.50", quantity="3")))
    assert (o.amount, o.quantity, o.total, o.ts) == (12.5, 3, 37.5, GOOD["ts"])
    o = parse_order(rec(order(amount=" 1.25e1 ", quantity="+3", ts=" 1700000000000")))
    assert (o.amount, o.quantity, o.ts) == (12.5, 3, 1_700_000_000_000)
    o = parse_order(rec(with_literal("quantity", "3.0")))
    assert (o.quantity, parse_order(rec(order(quantity="0.3e1"))).quantity) == (3, 3)
    assert parse_order(rec(with_literal("amount", "1e-99999999999999999999"))).amount == 0.0


def test_a_negative_zero_amount_counts_as_zero() -> None:
    raw = json.dumps(order(amount=-0.0)).encode()
    assert str(parse_order(rec(raw)).total) == "0.0"
    assert str(quick_order(raw, b"p1")[2]) == "0.0"  # type: ignore[index]


@pytest.mark.parametrize(
    ("ts", "ms"),
    [
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
        ("2023-11-14T23:13:20.250+01:00", 1_700_000_000_250),
        ("1700000000000", 1_700_000_000_000),
        (1_700_000_000_000.7, 1_700_000_000_000),
        # fractions are floored exactly, never rounded up into the next millisecond (or window)
        ("2023-11-14T22:13:59.9999Z", 1_700_000_039_999),
        ("2099-12-31T23:59:59.9999Z", 4_102_444_799_999),
        ("1699999979999.9999", 1_699_999_979_999),
        (Literal("1699999979999.9999"), 1_699_999_979_999),
        # zero whatever its exponent, past Decimal's range: as a string as in a JSON literal
        (Literal("0e99999999999999999999"), 0),
        ("0e99999999999999999999", 0),
        (" -0.0e-99999999999999999999 ", 0),
    ],
)
def test_timestamps_in_every_accepted_form(ts: object, ms: int) -> None:
    if isinstance(ts, Literal):  # a JSON number with more digits than a float holds
        raw = json.dumps(order(ts=0)).replace('"ts": 0', f'"ts": {ts}').encode()
        assert parse_order(rec(raw)).ts == ms
    else:
        assert parse_order(rec(order(ts=ts))).ts == ms


BAD_INPUTS = [
    (b"\xff\xfe\x00", b"p1", "not_utf8"),
    (b"{not json", b"p1", "not_json"),
    (b"[1, 2]", b"p1", "not_an_object"),
    (b"", b"p1", "empty_value"),
    (None, b"p1", "empty_value"),
    (order(user_id=...), b"p1", "missing_field"),
    (order(category=["x"]), b"p1", "wrong_type"),
    (order(amount=True), b"p1", "wrong_type"),
    (order(amount="twelve"), b"p1", "not_a_number"),
    (order(amount="1_000"), b"p1", "not_a_number"),  # float() would take these
    (order(amount="\u0661\u0662"), b"p1", "not_a_number"),
    (order(ts="1_700_000_000_000"), b"p1", "bad_timestamp"),
    (
        b'{"order_id":"o","user_id":"u","product_id":"p1","category":"c","amount":NaN,'
        b'"quantity":1,"ts":1700000000000}',
        b"p1",
        "not_finite",
    ),
    (order(amount="Infinity"), b"p1", "not_finite"),
    (order(amount=-1), b"p1", "out_of_range"),
    (json.dumps(order(user_id="u\ud800")).encode(), b"p1", "not_utf8"),
    (json.dumps(order(product_id="p\ud800")).encode(), b"p1", "not_utf8"),
    (order(amount=10**400), b"p1", "not_finite"),
    (order(amount="1" + "0" * 30, quantity=10**400), b"p1", "out_of_range"),
    (order(quantity=10**400), b"p1", "not_finite"),
    (order(amount=1e308, quantity=10), b"p1", "out_of_range"),
    (order(amount=1.000001e15), b"p1", "out_of_range"),
    (order(amount=9.99e-101), b"p1", "out_of_range"),
    (order(amount="5e-324"), b"p1", "out_of_range"),
    (order(quantity=10**9 + 1), b"p1", "out_of_range"),
    (order(order_id=10**1025), b"p1", "field_too_long"),
    # integer literals past Python's 4,300-digit conversion limit are still JSON
    (with_literal("amount", "1" * 4301), b"p1", "not_finite"),
    (with_literal("quantity", "1" * 4301), b"p1", "not_finite"),
    (with_literal("ts", "1" * 4301), b"p1", "timestamp_out_of_range"),
    (with_literal("order_id", "1" * 4301), b"p1", "field_too_long"),
    (with_literal("order_id", "1" * 4301)[:-1], b"p1", "not_json"),
    (order(quantity=0), b"p1", "out_of_range"),
    (order(quantity=1.5), b"p1", "not_an_integer"),
    # integral only as the nearest float: not as written
    (with_literal("quantity", "2.9999999999999999"), b"p1", "not_an_integer"),
    (order(quantity="2.9999999999999999"), b"p1", "not_an_integer"),
    (order(quantity="1e-99999999999999999999"), b"p1", "not_an_integer"),
    (with_literal("quantity", "1e-99999999999999999999"), b"p1", "not_an_integer"),
    (with_literal("quantity", "0.0e99999999999999999999"), b"p1", "out_of_range"),  # 0 exactly
    (order(quantity="0.0e99999999999999999999"), b"p1", "out_of_range"),
    (with_literal("ts", "-1e-99999999999999999999"), b"p1", "bad_timestamp"),  # floor is -1
    (with_literal("ts", "1e-99999999999999999999"), b"p1", "bad_timestamp"),
    (order(ts="1e-99999999999999999999"), b"p1", "bad_timestamp"),
    # exponents past what Decimal's context or constructor take
    (with_literal("ts", "1e1000000"), b"p1", "timestamp_out_of_range"),
    (with_literal("ts", "-1e1000000"), b"p1", "timestamp_out_of_range"),
    (order(ts="1e1000000"), b"p1", "timestamp_out_of_range"),
    (with_literal("ts", "1e99999999999999999999"), b"p1", "bad_timestamp"),
    (order(ts="1e99999999999999999999"), b"p1", "bad_timestamp"),
    (with_literal("amount", "1e99999999999999999999"), b"p1", "not_finite"),
    (order(ts="yesterday"), b"p1", "bad_timestamp"),
    (order(ts="2023-11-14T22:13:20"), b"p1", "bad_timestamp"),
    (order(ts=-1), b"p1", "timestamp_out_of_range"),
    (order(ts=99_999_999_999_999), b"p1", "timestamp_out_of_range"),
    (order(ts=10**400), b"p1", "timestamp_out_of_range"),  # readable, too large for a float
    (order(category="x" * 1_000_000), b"p1", "field_too_long"),
    (order(), None, "null_key"),
    (order(), b"p2", "key_mismatch"),
]


@pytest.mark.parametrize(("value", "key", "reason"), BAD_INPUTS)
def test_bad_input_has_a_precise_reason(value: object, key: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidRecord) as e:
        parse_order(rec(value, key=key))
    assert e.value.reason == reason


def test_pipeline_routes_bad_late_and_good_records_and_never_raises() -> None:
    state = PartitionState(MemoryStore(), 0)
    records = [rec(v, key=k, offset=i) for i, (v, k, _) in enumerate(BAD_INPUTS)]
    base = len(records)
    records += [
        rec(order(ts=1_000_000), offset=base),
        rec(order(ts=1_200_000), offset=base + 1),  # closes [960000, 1020000)
        rec(order(ts=1_000_001), offset=base + 2),  # late: its window is closed
    ]
    out = OrdersPipeline().process(state, records)
    by_topic: dict[str, list[object]] = {}
    for r in out.records:
        by_topic.setdefault(r.topic, []).append(r)
    assert len(by_topic[DLQ]) == len(BAD_INPUTS)
    assert [dict(r.headers)["kappa.error"].decode() for r in by_topic[DLQ]] == [
        b[2] for b in BAD_INPUTS
    ]
    assert [r.source_offset for r in by_topic[DLQ]] == list(range(len(BAD_INPUTS)))
    (late,) = by_topic[LATE]
    assert late.source_offset == records[-1].offset
    assert dict(late.headers)["kappa.late-by-ms"] == b"189999"
    assert late.value == records[-1].value
    (window,) = by_topic[REVENUE]
    assert json.loads(window.value) == {
        "product_id": "p1",
        "window_start": 960_000,
        "window_end": 1_020_000,
        "count": 1,
        "sum": 5.0,
        "mean": 5.0,
        "min": 5.0,
        "max": 5.0,
        "std": 0.0,
    }
    (forward,) = by_topic[BY_USER]  # one per user per batch; late orders still count
    assert json.loads(forward.value) == {
        "user_id": "u1",
        "src": [0, base + 2],
        "orders": 3,
        "spend": 15.0,
        "ts": 1_200_000,
    }
    assert out.counts.dlq == len(BAD_INPUTS) and out.counts.late == 1
    assert out.counts.windows_closed == 1


def test_records_already_applied_are_skipped_after_commit() -> None:
    state = PartitionState(MemoryStore(), 0)
    p = OrdersPipeline()
    batch = [rec(order(ts=1_000_000 + i), offset=i) for i in range(3)]
    p.process(state, batch)
    state.prepare(2)
    state.commit()
    again = p.process(state, batch)
    assert again.counts.skipped == 3 and again.counts.events == 0 and not again.records


def test_a_flush_counts_its_windows_as_provisional_not_closed() -> None:
    state = PartitionState(MemoryStore(), 0)
    p = OrdersPipeline()
    # Two windows (1-minute tumbling): the first closes when the second's events pass its grace.
    batch = [rec(order(ts=t), offset=i) for i, t in enumerate((1_000, 30_000, 200_000))]
    assert p.process(state, batch).counts.windows_closed == 1
    state.prepare(2)
    state.commit()
    flushed = p.flush(state)
    assert (flushed.counts.windows_closed, flushed.counts.windows_provisional) == (0, 1)
    assert [dict(r.headers) for r in flushed.records] == [{"kappa.provisional": b"1"}]
    # Said in the value too, for a reader that drops headers (a sink connector): not final.
    assert [json.loads(r.value)["final"] for r in flushed.records] == [False]


@pytest.mark.parametrize("final", [None, True, False])
def test_window_json_is_exactly_what_json_dumps_gives(final: bool | None) -> None:
    from agents.orders import revenue_value
    from tables.aggregates import Moments

    m = Moments()
    for x in (0.1, 2.5, 1e-7, 123456.789, 3.0):
        m.add(x)
    key = (1_700_000_060_000, 1_700_000_000_000, 'p"1\u00e9')
    want = {"product_id": key[2], "window_start": key[1], "window_end": key[0], **m.as_dict()}
    if final is not None:
        want["final"] = final
    assert revenue_value(key[2], key, m, final) == json.dumps(want, separators=(",", ":")).encode()


def test_emit_updates_sends_running_values_then_the_final_one() -> None:
    from agents.orders import OrdersConfig

    state = PartitionState(MemoryStore(), 0)
    p = OrdersPipeline(OrdersConfig(emit_updates=True))
    first = p.process(state, [rec(order(ts=1_000_000), offset=0)])
    state.prepare(0)
    state.commit()
    (update,) = [r for r in first.records if r.topic == REVENUE]
    assert json.loads(update.value)["final"] is False and json.loads(update.value)["count"] == 1
    second = p.process(
        state, [rec(order(ts=1_010_000), offset=1), rec(order(ts=1_200_000), offset=2)]
    )
    finals = [json.loads(r.value) for r in second.records if r.topic == REVENUE]
    closed = [w for w in finals if w["final"]]
    assert [(w["window_start"], w["count"]) for w in closed] == [(960_000, 2)]
    assert all(not w["final"] for w in finals if w not in closed)


_field_values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64), 2**64),
    st.just(10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, -0.0, 1e308, 2.5, 1.7e12, 4.2e12, 1e-100, 9.99e-101, 5e-324]),
    st.sampled_from([0, 1, 2**53, 2**53 + 1, 1_700_000_000_000, 4_102_444_800_000]),
    st.text(max_size=3),
    st.sampled_from(["p1", "", "12.5", "p\ud800", "é", "x" * 1025, "1700000000000"]),
    # numerals as strings: the quick path converts an amount sent as one
    st.sampled_from([" 2.50 ", "-0.0", "+.5", "5.", "1e15", "1e16", "1e999", "nan", "1_0"]),
    st.sampled_from(["9" * 64, "9" * 65, "٣", "-1", "0.1e1"]),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=500, deadline=None)
@given(
    fields=st.dictionaries(st.sampled_from(sorted(GOOD)), _field_values),
    base=st.booleans(),
    key=st.sampled_from([b"p1", None, b"p2", "p\u00e9".encode()]),
    spaces=st.sampled_from(["", " ", "\n"]),
    # the record's timestamp and KAPPA_MAX_TS_AHEAD_MS, around GOOD's ts and beyond
    record_ms=st.one_of(
        st.none(),
        st.sampled_from([-1, 0, 1, 2**53, 1_700_000_000_000]),
        st.integers(1_700_000_000_000 - 90_000_000, 1_700_000_000_001),
    ),
    max_ahead=st.sampled_from([0, 1, 86_400_000]),
)
def test_quick_path_accepts_only_what_parse_order_accepts_with_the_same_values(
    fields: dict[str, object],
    base: bool,
    key: bytes | None,
    spaces: str,
    record_ms: int | None,
    max_ahead: int,
) -> None:
    obj = {**GOOD, **fields} if base else fields
    try:
        raw = (json.dumps(obj) + spaces).encode()
    except (UnicodeEncodeError, ValueError):
        return
    # As the pipeline calls them (a record without a timestamp as 0: parse_order's to judge)
    quick = quick_order(raw, key, record_ms or 0, quick_ahead_ms(max_ahead))
    try:
        order = parse_order(SourceRecord("orders", 0, 0, record_ms, key, raw), max_ahead)
    except InvalidRecord:
        assert quick is None
        return
    if quick is not None:
        assert quick == (order.product_id, order.user_id, order.total, order.ts)


def test_quick_path_takes_well_typed_orders() -> None:
    assert quick_order(json.dumps(GOOD).encode(), b"p1") == ("p1", "u1", 5.0, GOOD["ts"])
    # An amount sent as a numeral is converted here (a tenth of the benchmark's orders): it
    # was decoded a second time, with Decimals, by parse_order.
    string_amount = json.dumps({**GOOD, "amount": " 1.25 ", "quantity": 4}).encode()
    assert quick_order(string_amount, b"p1") == ("p1", "u1", 5.0, GOOD["ts"])
    for word in ("twelve", "inf", "1_000", "٣"):  # parse_order's to convert or to name
        assert quick_order(json.dumps({**GOOD, "amount": word}).encode(), b"p1") is None
    assert (
        quick_order(json.dumps(GOOD).encode(), b"p2") is None
    )  # key mismatch: parse_order names it


# inf: a spend past the float range, which only state kept from before MAX_AMOUNT can hold
@pytest.mark.parametrize("stored_spend", [0.0, math.inf])
def test_forward_json_is_exactly_what_json_dumps_gives(stored_spend: float) -> None:
    state = PartitionState(MemoryStore(), 2)
    user = 'u"\u00e9'
    state.put_value(USER_PARTIALS, user, encode_partial(0, stored_spend, 0))
    state.prepare(3)
    state.commit()
    records = [rec(order(amount=2.5, user_id=user, quantity=1), offset=i) for i in (4, 5)]
    (fwd,) = [r for r in OrdersPipeline().process(state, records).records if r.topic == BY_USER]
    want = {"user_id": user, "src": [2, 5], "orders": 2, "spend": stored_spend + 5.0}
    assert fwd.value == json.dumps({**want, "ts": GOOD["ts"]}, separators=(",", ":")).encode()


GOOD_FORWARD = {"user_id": "u1", "src": [0, 5], "orders": 2, "spend": 4.5, "ts": 1_700_000_000_000}
_junk = st.one_of(
    st.none(),
    st.binary(max_size=60),
    st.builds(
        lambda o: json.dumps(o).encode(), st.dictionaries(st.text(max_size=9), _field_values)
    ),
    st.builds(
        lambda f: json.dumps({**GOOD, **f}).encode(),
        st.dictionaries(st.sampled_from(sorted(GOOD)), _field_values),
    ),
    st.builds(  # forward-shaped: what user-totals reads, with fields swapped for junk
        lambda f: json.dumps({**GOOD_FORWARD, **f}).encode(),
        st.dictionaries(st.sampled_from(sorted(GOOD_FORWARD)), _field_values),
    ),
    st.just(b"[" * 5000 + b"]" * 5000),  # nested past the JSON decoder's recursion limit
)


@settings(max_examples=300, deadline=None)
@given(values=st.lists(st.tuples(_junk, st.sampled_from([b"p1", None, b"\xff"])), max_size=12))
def test_any_input_is_processed_or_dead_lettered_and_never_raises(
    values: list[tuple[bytes | None, bytes | None]],
) -> None:
    """Fuzz both pipelines: arbitrary bytes never crash them, and every record is accounted for."""
    records = [rec(v, key=k, offset=i) for i, (v, k) in enumerate(values)]
    orders = OrdersPipeline().process(PartitionState(MemoryStore(), 0), records)
    c = orders.counts
    forwarded = [r for r in orders.records if r.topic == BY_USER]
    assert c.events == len(records) and c.dlq == sum(r.topic == DLQ for r in orders.records)
    assert c.dlq + c.skipped <= len(records)
    junk = [SourceRecord(BY_USER, 0, i, None, k, v) for i, (v, k) in enumerate(values)]
    fwd = [
        SourceRecord(BY_USER, 0, len(junk) + i, None, r.key, r.value)
        for i, r in enumerate(forwarded)
    ]
    totals = UserTotalsPipeline().process(PartitionState(MemoryStore(), 0), junk + fwd)
    assert totals.counts.events == len(junk) + len(fwd)
    assert not any(r.topic == DLQ and r.source_offset >= len(junk) for r in totals.records)


def test_stored_values_it_cannot_decode_stop_it_in_one_line_instead_of_the_dlq() -> None:
    """A user's running totals, or an open window, that the state holds and no release wrote:
    the state's fault, not the order's, so the order is not dead-lettered."""
    pipeline = OrdersPipeline()
    store = MemoryStore()
    state = PartitionState(store, 0, pipeline="orders")
    pipeline.process(state, [rec(order(), offset=0)])
    state.prepare(0)
    state.commit()
    state.put_value(USER_PARTIALS, "u1", b"\x01\x02")
    with pytest.raises(StateError) as caught:
        pipeline.process(state, [rec(order(), offset=1)])
    assert str(caught.value).startswith(
        "orders partition 0: the stored user-partials value of key 'u1' cannot be decoded ("
    )
    state.discard()
    (window,) = [k for k in store.data if k.startswith(b"W") and k.endswith(b"p1")]
    store.data[window] = b"\x00" * 3
    with pytest.raises(StateError, match=r"value of key 'p1 \[\d+, \d+\)' cannot be decoded"):
        pipeline.process(state, [rec(order(), offset=1)])
