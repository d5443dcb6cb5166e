"""Online k-means on a line: levels stay sorted, and match a plain sequential computation."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.clustering import LineKMeans

values = st.lists(st.floats(0, 30, allow_nan=False), max_size=60)


def test_first_distinct_values_seed_the_levels_then_members_move_their_centre() -> None:
    km = LineKMeans(3)
    assert [km.add(x) for x in (5.0, 1.0, 5.0, 9.0)] == [0, 0, 1, 2]
    assert km.centres == [1.0, 5.0, 9.0] and km.counts == [1, 2, 1]
    assert km.add(8.0) == 2  # nearest: 9, which moves to the mean of 9 and 8
    assert km.centres == [1.0, 5.0, 8.5] and km.counts == [1, 2, 2]
    assert km.add(3.0) == 0  # a tie between 1 and 5 goes to the lower level
    assert km.centres == [2.0, 5.0, 8.5]


@given(values, st.integers(1, 5))
def test_centres_stay_sorted_and_each_is_the_mean_of_its_members(xs: list[float], k: int) -> None:
    km = LineKMeans(k)
    members: list[list[float]] = []
    for x in xs:
        level = km.add(x)
        if len(members) < len(km.centres):
            members.insert(level, [x])
        else:
            members[level].append(x)
        assert km.centres == sorted(km.centres) and len(set(km.centres)) == len(km.centres)
    assert km.counts == [len(m) for m in members]
    for centre, m in zip(km.centres, members):
        assert centre == pytest.approx(sum(m) / len(m), rel=1e-9, abs=1e-9)


def test_k_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="k must be from 1 to 100"):
        LineKMeans(0)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_a_value_that_is_not_finite_is_refused_and_changes_nothing(bad: float) -> None:
    km = LineKMeans(3)
    km.add(1.0)
    with pytest.raises(ValueError, match="must be finite"):
        km.add(bad)
    assert km.centres == [1.0] and km.counts == [1]
