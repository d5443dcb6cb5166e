"""The per-user state format: exact round trips, one byte string per value, and JSON values
written by earlier versions still read."""

from __future__ import annotations

import json
import math

from hypothesis import given
from hypothesis import strategies as st

from agents.user_state import (
    BINARY_V1,
    decode_partial,
    decode_parts,
    encode_partial,
    encode_parts,
)

_i64 = st.integers(0, 2**63 - 1)
_spend = st.floats(min_value=0.0, allow_nan=False)  # sums of non-negative totals, maybe inf
_parts = st.dictionaries(
    st.integers(0, 2**31 - 1), st.tuples(_i64, _i64, _spend, st.integers(-(2**63), 2**63 - 1))
)


@given(_i64, _spend, _i64)
def test_a_partial_round_trips_exactly(orders: int, spend: float, ts: int) -> None:
    raw = encode_partial(orders, spend, ts)
    assert raw[0] == BINARY_V1
    assert decode_partial(raw) == (orders, spend, ts)


@given(_parts)
def test_parts_round_trip_exactly_and_their_bytes_do_not_depend_on_insertion_order(
    parts: dict[int, tuple[int, int, float, int]],
) -> None:
    raw = encode_parts(parts)
    assert raw[0] == BINARY_V1
    assert decode_parts(raw) == parts
    assert encode_parts(dict(reversed(list(parts.items())))) == raw


def test_json_values_of_earlier_versions_are_read() -> None:
    assert decode_partial(b"[3,12.5,1700000000000]") == (3, 12.5, 1_700_000_000_000)
    assert decode_partial(json.dumps([1, math.inf, 5]).encode()) == (1, math.inf, 5)
    legacy = json.dumps({"1": [9, 2, 3.5, 7], "0": [4, 1, 1.0, 6]}, sort_keys=True).encode()
    assert decode_parts(legacy) == {0: (4, 1, 1.0, 6), 1: (9, 2, 3.5, 7)}
