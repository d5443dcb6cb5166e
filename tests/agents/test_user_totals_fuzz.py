"""Fuzz the user-totals pipeline with anything a writer of `orders.by-user` can put there: each
record is counted or dead-lettered as `bad_forward`, the state stays decodable, and the
dead-lettered records change nothing for the others."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agents.orders import BY_USER
from agents.user_state import decode_parts
from agents.user_totals import USER_TOTALS_STORE, UserTotalsPipeline
from tables.partition_state import APPLIED_OFFSET, KV_PREFIX
from tests.support.fuzz import HEADERS, check_batch, json_bytes, source_records, values

GOOD_FORWARD = {"user_id": "u1", "src": [0, 5], "orders": 2, "spend": 4.5, "ts": 1_700_000_000_000}


def decode_state(entries: list[tuple[bytes, bytes]]) -> None:
    for key, value in entries:
        if key != APPLIED_OFFSET:
            assert key.startswith(KV_PREFIX + USER_TOTALS_STORE.encode() + b"\0"), key
            key.decode()
            decode_parts(value)


_good = st.builds(
    lambda user, partition, offset, n, spend: (
        user.encode(),
        json_bytes(
            {
                **GOOD_FORWARD,
                "user_id": user,
                "src": [partition, offset],
                "orders": n,
                "spend": spend,
            }
        ),
        [],
    ),
    st.sampled_from(["u1", "u2", "é"]),
    st.integers(0, 3),
    st.integers(0, 20),
    st.integers(0, 9),
    st.sampled_from([0.0, 4.5, 1e24, 1e300]),
)
_junk = st.tuples(st.sampled_from([b"u1", None, b"", b"\xff"]), values(GOOD_FORWARD), HEADERS)


@settings(max_examples=200, deadline=None)
@given(batch=st.lists(st.one_of(_good, _junk), max_size=14))
def test_any_batch_is_counted_or_dead_lettered_as_bad_forward(
    batch: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]],
) -> None:
    check_batch(UserTotalsPipeline, source_records(BY_USER, batch), {"bad_forward"}, decode_state)
