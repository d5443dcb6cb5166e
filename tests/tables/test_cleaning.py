"""Numeric and time fields of raw records: what is read as a number, and at what cost."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.cleaning import (
    _DECIMAL,
    InvalidRecord,
    numeral_value,
    require_event_time_ms,
    require_not_ahead,
    require_number,
)

# The pattern as first written (backtracking): the language must not change.
_PLAIN = re.compile(r"\s*[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?\s*", re.ASCII)


@given(st.text(alphabet=" \t+-.eE0123456789x_٣", max_size=24))
def test_numeric_strings_are_the_same_language_as_before(s: str) -> None:
    assert bool(_DECIMAL.fullmatch(s)) == bool(_PLAIN.fullmatch(s))


@pytest.mark.parametrize("field", ["ts", "amount"])
def test_a_long_numeric_looking_string_is_rejected_without_backtracking(field: str) -> None:
    """200,000 digits and a letter: a backtracking match takes time that grows with the
    square of the length (about 15 minutes here), holding up the whole batch."""
    value = "1" * 200_000 + "x"
    for text in (value, value[:60] + "x"):  # past the length limit, and within it
        with pytest.raises(InvalidRecord) as rejected:
            (require_event_time_ms if field == "ts" else require_number)({field: text}, field)
        assert rejected.value.reason == ("bad_timestamp" if field == "ts" else "not_a_number")
    assert _DECIMAL.fullmatch(value) is None


@given(
    st.text(alphabet=" \t+-.eE0123456789x_٣in", max_size=70)
    | st.sampled_from(["9" * 65, "1e999", "-1e999", " 2.50 "])
)
def test_a_numeral_is_read_as_require_number_reads_it(s: str) -> None:
    """`numeral_value` is the hot path's `require_number` for numerals; None leaves the rest
    (words, too long, not numbers) to `require_number`. A numeral past the float range is
    infinite: the caller's range check refuses it, and `require_number` names it."""
    quick = numeral_value(s)
    try:
        slow = require_number({"f": s}, "f")
    except InvalidRecord:
        assert quick is None or math.isinf(quick)
        return
    assert quick is None or quick == slow
    assert (quick is None) == (not _DECIMAL.fullmatch(s) or len(s) > 64)


DAY_MS = 86_400_000
STAMP = 1_700_000_000_000  # a record's Kafka timestamp


@pytest.mark.parametrize(
    ("ts", "record_ms", "max_ahead_ms"),
    [
        (STAMP + DAY_MS, STAMP, DAY_MS),  # just inside the bound
        (STAMP - 3_600_000, STAMP, DAY_MS),  # behind its record: as old events are
        (4_102_444_799_999, STAMP, 0),  # 0: no limit
        (4_102_444_799_999, None, DAY_MS),  # a record without a timestamp is not checked
        (4_102_444_799_999, -1, DAY_MS),  # nor one with Kafka's "none" (-1)
        (4_102_444_799_999, 4_102_444_799_999 - 1, 1),
    ],
)
def test_an_event_time_within_the_bound_of_its_record_passes(
    ts: int, record_ms: int | None, max_ahead_ms: int
) -> None:
    require_not_ahead(ts, record_ms, max_ahead_ms)


def test_an_event_time_past_the_bound_is_refused_naming_both_times() -> None:
    with pytest.raises(InvalidRecord) as refused:
        require_not_ahead(STAMP + DAY_MS + 1, STAMP, DAY_MS)
    assert refused.value.reason == "timestamp_ahead"
    assert refused.value.detail == (
        "ts 1700086400001 (2023-11-15T22:13:20.001Z) is more than 86400000 ms after the "
        "record's timestamp 1700000000000 (2023-11-14T22:13:20.000Z)"
    )
    with pytest.raises(InvalidRecord):
        require_not_ahead(2, 0, 1)  # a record stamped at the epoch is checked too
