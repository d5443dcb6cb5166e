"""Moments: one-pass count/sum/mean/min/max/std, Chan merge, and the fixed binary encoding."""

from __future__ import annotations

import itertools
import math
import statistics

from hypothesis import given, settings
from hypothesis import strategies as st

from tables.aggregates import Moments

REL = 1e-9
ABS = 1e-6


def moments_of(values: list[float]) -> Moments:
    m = Moments()
    for v in values:
        m.add(v)
    return m


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=REL, abs_tol=ABS)


# --- empty state ----------------------------------------------------------------------------


def test_empty_moments() -> None:
    m = Moments()
    assert m.count == 0
    assert m.total == 0.0
    assert m.std == 0.0
    assert m.sample_std == 0.0


def test_as_dict_of_empty_state_has_no_min_max_and_zero_mean() -> None:
    assert Moments().as_dict() == {
        "count": 0,
        "sum": 0.0,
        "mean": 0.0,
        "min": None,
        "max": None,
        "std": 0.0,
    }


# --- add ------------------------------------------------------------------------------------


def test_add_computes_all_moments() -> None:
    m = moments_of([2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0])
    assert m.count == 8
    assert m.total == 40.0
    assert m.mean == 5.0
    assert m.min == 2.0
    assert m.max == 9.0
    assert m.m2 == 32.0
    assert m.std == 2.0  # population std: sqrt(32 / 8)
    assert math.isclose(m.sample_std, math.sqrt(32.0 / 7.0), rel_tol=1e-12)


def test_single_value_has_zero_std() -> None:
    m = moments_of([3.5])
    assert (m.count, m.total, m.mean, m.min, m.max) == (1, 3.5, 3.5, 3.5, 3.5)
    assert m.std == 0.0
    assert m.sample_std == 0.0


def test_min_and_max_track_extremes_in_any_order() -> None:
    m = moments_of([5.0, 1.0, 9.0, -3.0, 4.0])
    assert m.min == -3.0
    assert m.max == 9.0


def test_as_dict_of_populated_state() -> None:
    assert moments_of([1.0, 3.0]).as_dict() == {
        "count": 2,
        "sum": 4.0,
        "mean": 2.0,
        "min": 1.0,
        "max": 3.0,
        "std": 1.0,
    }


# --- merge ----------------------------------------------------------------------------------


def test_merge_two_halves_equals_adding_all() -> None:
    left = moments_of([2.0, 4.0, 4.0, 4.0])
    right = moments_of([5.0, 5.0, 7.0, 9.0])
    left.merge(right)
    assert left.count == 8
    assert left.total == 40.0
    assert left.mean == 5.0
    assert left.m2 == 32.0
    assert (left.min, left.max) == (2.0, 9.0)
    assert left.std == 2.0


def test_merge_into_empty_copies_the_other() -> None:
    other = moments_of([1.0, 2.0, 6.0])
    m = Moments()
    m.merge(other)
    assert m == other


def test_merge_of_empty_changes_nothing() -> None:
    m = moments_of([1.0, 2.0, 6.0])
    before = Moments.from_bytes(m.to_bytes())
    m.merge(Moments())
    assert m == before


def test_merge_leaves_the_other_untouched() -> None:
    m = moments_of([1.0])
    other = moments_of([2.0, 3.0])
    snapshot = Moments.from_bytes(other.to_bytes())
    m.merge(other)
    assert other == snapshot


def test_merge_then_add_continues_correctly() -> None:
    m = moments_of([1.0, 2.0])
    m.merge(moments_of([3.0]))
    m.add(4.0)
    assert m.count == 4
    assert m.mean == 2.5
    assert math.isclose(m.std, statistics.pstdev([1.0, 2.0, 3.0, 4.0]), rel_tol=1e-12)


# --- encoding -------------------------------------------------------------------------------


def test_to_bytes_roundtrip_of_populated_state() -> None:
    m = moments_of([0.1, 0.2, 123456.789, 7.0])
    raw = m.to_bytes()
    assert isinstance(raw, bytes)
    assert len(raw) == 48  # int64 count + five float64
    assert Moments.from_bytes(raw) == m


def test_to_bytes_roundtrip_of_empty_state_keeps_infinite_min_max() -> None:
    back = Moments.from_bytes(Moments().to_bytes())
    assert back == Moments()
    assert back.min == math.inf
    assert back.max == -math.inf
    assert back.as_dict()["min"] is None
    # a decoded empty state still behaves as empty: first add sets min and max
    back.add(-2.0)
    assert (back.min, back.max) == (-2.0, -2.0)


# --- properties -----------------------------------------------------------------------------

values_st = st.lists(
    st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(values=values_st)
def test_add_matches_direct_statistics(values: list[float]) -> None:
    m = moments_of(values)
    assert m.count == len(values)
    if values:
        assert m.min == min(values)
        assert m.max == max(values)
        assert close(m.total, math.fsum(values))
        assert close(m.mean, statistics.fmean(values))
        assert close(m.std, statistics.pstdev(values))
        if len(values) > 1:
            assert close(m.sample_std, statistics.stdev(values))
    assert Moments.from_bytes(m.to_bytes()) == m


@settings(max_examples=200, deadline=None)
@given(data=st.data(), values=values_st)
def test_merging_any_split_equals_adding_all(data: st.DataObject, values: list[float]) -> None:
    cuts = sorted(
        data.draw(st.lists(st.integers(0, len(values)), max_size=8), label="split points")
    )
    bounds = [0, *cuts, len(values)]
    parts = [moments_of(values[a:b]) for a, b in itertools.pairwise(bounds)]
    # merge order is free too (merge is commutative), and partials may go through bytes
    order = data.draw(st.permutations(range(len(parts))), label="merge order")
    merged = Moments()
    for i in order:
        merged.merge(Moments.from_bytes(parts[i].to_bytes()))

    whole = moments_of(values)
    assert merged.count == whole.count
    assert merged.min == whole.min
    assert merged.max == whole.max
    assert close(merged.total, whole.total)
    assert close(merged.mean, whole.mean)
    assert close(merged.std, whole.std)
    assert close(merged.sample_std, whole.sample_std)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), values=values_st)
def test_add_many_over_any_split_is_bit_identical_to_adding_one_by_one(
    data: st.DataObject, values: list[float]
) -> None:
    cuts = sorted(data.draw(st.lists(st.integers(0, len(values)), max_size=6), label="splits"))
    m = Moments()
    for a, b in itertools.pairwise([0, *cuts, len(values)]):
        m.add_many(values[a:b])
    assert m == moments_of(values)
