"""Fuzz the orders pipeline with anything a producer of `orders` can write: each record is
processed or dead-lettered under a documented reason, the state stays decodable, and the
dead-lettered records change nothing for the others."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.orders import LATE, USER_PARTIALS, OrdersConfig, OrdersPipeline
from agents.user_state import decode_partial
from tables.aggregates import Moments
from tables.partition_state import APPLIED_OFFSET, KV_PREFIX, META_PREFIX, WINDOW_PREFIX
from tests.support.datasets import GOOD_ORDER
from tests.support.fuzz import HEADERS, check_batch, json_bytes, source_records, values

# README, "Dead-letter reasons": what the orders pipeline may name.
REASONS = {
    "empty_value",
    "not_utf8",
    "not_json",
    "not_an_object",
    "missing_field",
    "empty_field",
    "field_too_long",
    "wrong_type",
    "not_a_number",
    "not_finite",
    "not_an_integer",
    "out_of_range",
    "bad_timestamp",
    "timestamp_out_of_range",
    "null_key",
    "key_mismatch",
    "timestamp_ahead",
}
CONFIGS = {
    "tumbling": OrdersConfig(),
    "hopping, updates, since": OrdersConfig(
        emit_updates=True, hopping=(120_000, 60_000), since_ms=1_700_000_040_000
    ),
}
_I64 = struct.Struct(">q")


def decode_state(entries: list[tuple[bytes, bytes]]) -> None:
    """Every entry of an orders state decodes: windows, users' running totals, clocks."""
    for key, value in entries:
        if key.startswith(WINDOW_PREFIX):
            store, _, rest = key[1:].partition(b"\0")
            assert store.startswith(b"revenue-") and len(rest) > 16
            rest[16:].decode()
            Moments.from_bytes(value)
        elif key.startswith(KV_PREFIX + USER_PARTIALS.encode() + b"\0"):
            key.decode()
            decode_partial(value)
        else:
            assert key == APPLIED_OFFSET or key.startswith(META_PREFIX + b"stream-time:"), key
            _I64.unpack(value)


_good = st.builds(
    lambda product, user, ts, amount: (
        product.encode(),
        json_bytes(
            {**GOOD_ORDER, "product_id": product, "user_id": user, "ts": ts, "amount": amount}
        ),
        [],
    ),
    st.sampled_from(["p1", "p2", "é"]),
    st.sampled_from(["u1", "u2"]),
    # the records are stamped 1_700_000_000_000: a day and more after it is dead-lettered
    st.integers(1_700_000_000_000, 1_700_000_300_000) | st.just(1_700_086_400_001),
    st.sampled_from([0.0, 2.5, 1e15, "3.25"]),
)
_junk = st.tuples(
    st.sampled_from(
        [b"p1", None, b"", b"\xff", "é".encode(), "\ud800".encode("utf-8", "surrogatepass")]
    ),
    values(GOOD_ORDER),
    HEADERS,
)


@pytest.mark.parametrize("config", CONFIGS.values(), ids=CONFIGS.keys())
@settings(max_examples=150, deadline=None)
@given(batch=st.lists(st.one_of(_good, _junk), max_size=14))
def test_any_batch_is_processed_or_dead_lettered_under_a_documented_reason(
    config: OrdersConfig, batch: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]]
) -> None:
    check_batch(
        lambda: OrdersPipeline(config),
        source_records("orders", batch),
        REASONS,
        decode_state,
        copies=(LATE,),
    )
