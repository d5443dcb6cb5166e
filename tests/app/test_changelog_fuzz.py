"""Fuzz the changelog's marker records, which anyone with access to the topic can write: a
search over any records finds what it finds or stops in one line, never with a traceback."""

from __future__ import annotations

import struct
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.changelog import OwnMarkerSearch
from tables.partition_state import APPLIED_OFFSET, ORIGIN, StateError


@dataclass
class _Rec:
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp: int


_entries = st.tuples(
    st.sampled_from([APPLIED_OFFSET, APPLIED_OFFSET, ORIGIN, b"Kx", b"", None]),
    st.one_of(
        st.none(),
        st.binary(max_size=12),
        st.builds(struct.Struct(">q").pack, st.integers(-(2**63), 2**63 - 1)),
    ),
)


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(_entries, max_size=12), applied=st.integers(-1, 5))
def test_any_records_are_searched_or_refused_in_one_line(
    entries: list[tuple[bytes | None, bytes | None]], applied: int
) -> None:
    search = OwnMarkerSearch(applied, cutoff_ms=0, where="orders-changelog[3]")
    records = [_Rec(i, k, v, 1_000) for i, (k, v) in enumerate(entries)]
    bad = [
        r for r in records if r.key == APPLIED_OFFSET and r.value is not None and len(r.value) != 8
    ]
    try:
        search.read(records)
    except StateError as e:
        assert bad and "\n" not in str(e)
        assert str(e).startswith(f"orders-changelog[3] offset {bad[0].offset}: ")
        return
    assert not bad
    search.window_read()
    assert search.found(log_start_read=True) in (None, *(r.offset + 1 for r in records))


def test_a_marker_that_is_no_offset_stops_the_search_in_one_line() -> None:
    search = OwnMarkerSearch(4, cutoff_ms=0, where="orders-changelog[3]")
    with pytest.raises(StateError) as caught:
        search.read([_Rec(0, b"Kx", b"v", 0), _Rec(1, APPLIED_OFFSET, b"\x00\x04", 0)])
    assert str(caught.value) == (
        "orders-changelog[3] offset 1: the applied offset there cannot be decoded (not 8 "
        "bytes long): only Kappa may write to a changelog topic; replay into a new version"
    )
