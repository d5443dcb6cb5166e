"""Window definitions: epoch-aligned assignment, half-open [start, end) ends, names, validation."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tables.windows import HoppingWindows, TumblingWindows, Window


def brute_force_windows(size_ms: int, step_ms: int, ts: int) -> list[Window]:
    """Every epoch-aligned window [k*step, k*step + size) containing ts, by plain search."""
    lo = (ts - size_ms) // step_ms - 1
    hi = ts // step_ms + 1
    return [
        Window(k * step_ms, k * step_ms + size_ms)
        for k in range(lo, hi + 1)
        if k * step_ms <= ts < k * step_ms + size_ms
    ]


# --- tumbling -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (0, Window(0, 10)),
        (1, Window(0, 10)),
        (9, Window(0, 10)),  # last ms inside [0, 10)
        (10, Window(10, 20)),  # end is exclusive: 10 starts the next window
        (25, Window(20, 30)),
        (-1, Window(-10, 0)),  # negative times floor towards -inf, not towards 0
        (-10, Window(-10, 0)),
        (-11, Window(-20, -10)),
        (-9, Window(-10, 0)),
    ],
)
def test_tumbling_assigns_the_single_epoch_aligned_window(ts: int, expected: Window) -> None:
    assert TumblingWindows(10).assign(ts) == [expected]


def test_tumbling_with_size_one_gives_a_window_per_millisecond() -> None:
    assert TumblingWindows(1).assign(-3) == [Window(-3, -2)]
    assert TumblingWindows(1).assign(7) == [Window(7, 8)]


def test_tumbling_step_equals_size() -> None:
    assert TumblingWindows(60_000).step_ms == 60_000


# --- hopping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        (0, [Window(-5, 5), Window(0, 10)]),
        (4, [Window(-5, 5), Window(0, 10)]),
        (5, [Window(0, 10), Window(5, 15)]),  # 5 leaves [-5, 5): end exclusive
        (9, [Window(0, 10), Window(5, 15)]),
        (10, [Window(5, 15), Window(10, 20)]),
        (-1, [Window(-10, 0), Window(-5, 5)]),
        (-5, [Window(-10, 0), Window(-5, 5)]),
        (-6, [Window(-15, -5), Window(-10, 0)]),
    ],
)
def test_hopping_assigns_every_window_containing_ts(ts: int, expected: list[Window]) -> None:
    assert HoppingWindows(10, 5).assign(ts) == expected


def test_hopping_with_step_not_dividing_size() -> None:
    # starts are multiples of 3 in (0 - 10, 0] = -9, -6, -3, 0
    assert HoppingWindows(10, 3).assign(0) == [
        Window(-9, 1),
        Window(-6, 4),
        Window(-3, 7),
        Window(0, 10),
    ]
    # starts in (-17 - 10, -17] = -27 excluded (end -17 is exclusive), -24, -21, -18
    assert HoppingWindows(10, 3).assign(-17) == [
        Window(-24, -14),
        Window(-21, -11),
        Window(-18, -8),
    ]


@pytest.mark.parametrize("ts", [-21, -20, -19, -1, 0, 1, 19, 20, 21])
def test_hopping_with_step_equal_to_size_is_tumbling(ts: int) -> None:
    assert HoppingWindows(20, 20).assign(ts) == TumblingWindows(20).assign(ts)


# --- names ----------------------------------------------------------------------------------


def test_window_names_are_stable_strings() -> None:
    assert TumblingWindows(60_000).name == "tumbling-60000ms"
    assert HoppingWindows(60_000, 10_000).name == "hopping-60000ms-10000ms"
    assert HoppingWindows(5, 5).name == "hopping-5ms-5ms"


def test_different_definitions_have_different_names() -> None:
    names = {
        TumblingWindows(10).name,
        TumblingWindows(100).name,
        HoppingWindows(10, 1).name,
        HoppingWindows(101, 1).name,
        HoppingWindows(10, 10).name,
        HoppingWindows(1, 1).name,
    }
    assert len(names) == 6


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, -1, -60_000])
def test_tumbling_rejects_non_positive_size(size: int) -> None:
    with pytest.raises(ValueError, match="size"):
        TumblingWindows(size)


@pytest.mark.parametrize(("size", "step"), [(0, 1), (-10, 5), (10, 0), (10, -5), (0, 0)])
def test_hopping_rejects_non_positive_size_or_step(size: int, step: int) -> None:
    with pytest.raises(ValueError, match="> 0"):
        HoppingWindows(size, step)


@pytest.mark.parametrize(("size", "step"), [(10, 11), (1, 2), (60_000, 120_000)])
def test_hopping_rejects_step_larger_than_size(size: int, step: int) -> None:
    with pytest.raises(ValueError, match="step must not exceed"):
        HoppingWindows(size, step)


def test_definitions_and_windows_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        TumblingWindows(10).size_ms = 20  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        Window(0, 10).end = 11  # type: ignore[misc]


def test_windows_order_by_start_then_end() -> None:
    assert sorted([Window(5, 15), Window(0, 10), Window(0, 5)]) == [
        Window(0, 5),
        Window(0, 10),
        Window(5, 15),
    ]


# --- properties -----------------------------------------------------------------------------

timestamps = st.integers(min_value=-(10**13), max_value=10**13)


@settings(max_examples=200, deadline=None)
@given(size=st.integers(1, 10_000), ts=timestamps)
def test_tumbling_assign_matches_brute_force(size: int, ts: int) -> None:
    assert TumblingWindows(size).assign(ts) == brute_force_windows(size, size, ts)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), size=st.integers(1, 200), ts=timestamps)
def test_hopping_assign_matches_brute_force(data: st.DataObject, size: int, ts: int) -> None:
    step = data.draw(st.integers(1, size), label="step")
    windows = HoppingWindows(size, step).assign(ts)
    assert windows == brute_force_windows(size, step, ts)
    assert all(w.start <= ts < w.end and w.end - w.start == size for w in windows)
    # ceil(size / step) or floor(size / step) windows, never zero: no event is dropped
    assert size // step <= len(windows) <= -(-size // step)
