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
