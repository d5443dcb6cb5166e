"""A product's order rate, and how long a silence must last to be unlikely under it."""

from __future__ import annotations

import math

import pytest

from tables.quiet import MAX_QUIET_WINDOWS, Activity, QuietConfig

W = 60_000
CONFIG = QuietConfig(decay=0.5 ** (1 / 10), warmup_windows=3, p_quiet=1e-3)


def test_a_silence_is_as_long_as_the_rate_makes_it_unlikely() -> None:
    assert CONFIG.quiet_windows(50.0) == 1  # e^-50 after one empty window
    assert CONFIG.quiet_windows(1.0) == 7  # e^-7 < 1e-3 < e^-6
    assert CONFIG.quiet_windows(0.1) == 70  # ln(1000)/0.1 = 69.08
    assert CONFIG.quiet_windows(1e-9) is None  # longer than any silence worth waiting for
    assert CONFIG.quiet_windows(math.log(1e3) / MAX_QUIET_WINDOWS) == MAX_QUIET_WINDOWS


def test_the_rate_counts_the_empty_windows_between() -> None:
    steady = Activity.first(0, 0, W, 4, CONFIG)
    for i in range(1, 30):
        assert steady.observe(0, i * W, (i + 1) * W, 4, CONFIG)
    assert steady.rate == pytest.approx(4.0)
    sparse = Activity.first(0, 0, W, 4, CONFIG)
    for i in range(1, 30):
        sparse.observe(0, 2 * i * W, (2 * i + 1) * W, 4, CONFIG)  # every other window
    assert sparse.rate == pytest.approx(2.0, rel=0.05)


def test_an_order_every_ten_windows_reads_as_a_rate_of_0_13_and_a_silence_of_52() -> None:
    """What the README says: the rate is taken at the product's last window with orders,
    which weighs most (not the long-run 0.1, whose silence would be 70 windows)."""
    a = Activity.first(0, 0, W, 1, CONFIG)
    for i in range(1, 40):
        a.observe(0, 10 * i * W, (10 * i + 1) * W, 1, CONFIG)
    d = CONFIG.decay
    assert a.rate == pytest.approx((1 - d) / (1 - d**10), rel=1e-3)  # 0.134
    assert CONFIG.quiet_windows(a.rate) == 52


def test_silences_are_watched_only_after_the_warm_up() -> None:
    a = Activity.first(1, 0, W, 10, CONFIG)
    a.observe(1, W, 2 * W, 10, CONFIG)
    assert a.due is None and a.windows == 2
    a.observe(1, 2 * W, 3 * W, 10, CONFIG)
    assert a.due == 3 * W + CONFIG.quiet_windows(a.rate) * W  # type: ignore[operator]


def test_a_window_not_after_the_last_changes_nothing() -> None:
    a = Activity.first(0, 5 * W, 6 * W, 3, CONFIG)
    before = a.to_bytes()
    assert not a.observe(0, 5 * W, 6 * W, 3, CONFIG)
    assert not a.observe(0, 4 * W, 5 * W, 3, CONFIG)
    assert a.to_bytes() == before


def test_a_silence_is_said_once_with_what_was_expected() -> None:
    a = Activity.first(2, 0, W, 5, CONFIG)
    for i in range(1, 3):
        a.observe(2, i * W, (i + 1) * W, 5, CONFIG)
    due = a.due
    assert due is not None
    point = a.silence("p1")
    assert (point.product, point.partition, point.last_start) == ("p1", 2, 2 * W)
    assert (point.quiet_from, point.quiet_until) == (3 * W, due)
    assert point.windows == (due - 3 * W) // W
    assert point.expected_orders == pytest.approx(point.rate * point.windows)
    assert a.due is None


def test_the_state_round_trips() -> None:
    a = Activity.first(3, -W, 0, 7, CONFIG)  # before 1970 too
    for i in range(1, 5):
        a.observe(3, i * W, (i + 1) * W, i, CONFIG)
    assert Activity.from_bytes(a.to_bytes()) == a
    a.due = None
    assert Activity.from_bytes(a.to_bytes()) == a


@pytest.mark.parametrize(
    "fields", [{"decay": 1.0}, {"decay": 0.0}, {"p_quiet": 0.0}, {"warmup_windows": 0}]
)
def test_a_config_out_of_range_is_refused(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        QuietConfig(**fields)  # type: ignore[arg-type]
