"""DLQ and late copies cut to what a broker accepts (agents/base.py `fit_copy`), no broker."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from agents.base import (
    MIN_COPY_BYTES,
    TRUNCATED_KEY,
    TRUNCATED_VALUE,
    Headers,
    fit_copy,
    record_bytes_bound,
    source_headers,
)
from tests.support.record_batches import batch_builder

SOURCE = source_headers("orders", 3, 41)
REASON: Headers = [("kappa.error", b"not_json")]


def batch_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """What a Kafka producer really writes for this record alone (record format v2)."""
    builder = batch_builder(2**31 - 1)
    builder.append(0, timestamp=1_700_000_000_000, key=key, value=value, headers=headers)
    return len(builder.build())


def test_a_copy_that_fits_is_passed_on_unchanged() -> None:
    headers = REASON + SOURCE
    assert fit_copy(b"p1", b"{broken", headers, MIN_COPY_BYTES) == (b"p1", b"{broken", headers)


def test_a_too_big_value_is_cut_to_fit_and_its_length_noted() -> None:
    value = b"x" * 50_000
    key, cut, headers = fit_copy(b"p1", value, REASON + SOURCE, 10_000)
    assert key == b"p1" and value.startswith(cut) and 9_000 < len(cut) < 10_000
    assert headers == REASON + SOURCE + [(TRUNCATED_VALUE, b"50000")]
    assert batch_size(key, cut, headers) <= 10_000


def test_a_key_too_big_for_any_value_goes_too() -> None:
    key, cut, headers = fit_copy(b"k" * 20_000, b"v" * 100, REASON + SOURCE, MIN_COPY_BYTES)
    assert key is None and cut == b"v" * 100
    assert headers == REASON + SOURCE + [(TRUNCATED_KEY, b"20000")]  # the value is whole
    assert batch_size(key, cut, headers) <= MIN_COPY_BYTES


header = st.tuples(st.text(max_size=30), st.binary(max_size=600))


@given(
    st.one_of(st.none(), st.binary(max_size=12_000)),
    st.one_of(st.none(), st.binary(max_size=30_000)),
    st.lists(header, max_size=3),
    st.integers(MIN_COPY_BYTES, 40_000),
)
def test_any_copy_fits_and_keeps_what_it_can(
    key: bytes | None, value: bytes | None, extra: Headers, max_bytes: int
) -> None:
    headers = extra + SOURCE
    k, v, h = fit_copy(key, value, headers, max_bytes)
    assert batch_size(k, v, h) <= record_bytes_bound(k, v, h) <= max_bytes
    assert h[: len(headers)] == headers  # the reason and the source position are never cut
    if record_bytes_bound(key, value, headers) <= max_bytes:
        assert (k, v, h) == (key, value, headers)
    noted = dict(h[len(headers) :])
    if TRUNCATED_VALUE in noted:
        assert noted[TRUNCATED_VALUE] == str(len(value or b"")).encode()
        assert (value or b"").startswith(v or b"") and len(v or b"") < len(value or b"")
    else:
        assert v == value
    if TRUNCATED_KEY in noted:
        assert k is None and noted[TRUNCATED_KEY] == str(len(key or b"")).encode()
    else:
        assert k == key
