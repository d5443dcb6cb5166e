"""The trend analytics without a broker: each measure against a plain batch computation,
batching independence, state round trips, and what counts as an anomaly."""

from __future__ import annotations

import math
import random
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.trends import Trend, TrendConfig, trend_points

SIZE = 60_000
CONFIG = TrendConfig(average_windows=3, half_life_windows=4.0, anomaly_z=3.0, warmup_windows=3)


def series(
    values: list[float], indexes: list[int] | None = None
) -> list[tuple[int, int, int, float]]:
    indexes = indexes if indexes is not None else list(range(len(values)))
    return [(i * SIZE, (i + 1) * SIZE, 2, v) for i, v in zip(indexes, values)]


def weighted_line(points: list[tuple[int, float]], decay: float) -> tuple[float, float]:
    """(intercept at the last index, slope) of the weighted least-squares line, from the normal
    equations over all points at once: the batch computation the online sums must equal."""
    last = points[-1][0]
    n = len(points)
    w = [decay ** (n - 1 - i) for i in range(n)]
    d = [k - last for k, _ in points]
    y = [v for _, v in points]
    s0, s1 = sum(w), sum(wi * di for wi, di in zip(w, d))
    s2 = sum(wi * di * di for wi, di in zip(w, d))
    sy, sdy = sum(wi * yi for wi, yi in zip(w, y)), sum(wi * di * yi for wi, di, yi in zip(w, d, y))
    det = s0 * s2 - s1 * s1
    if n < 2 or det <= 1e-12 * s0 * s0:
        return sy / s0, 0.0
    slope = (s0 * sdy - s1 * sy) / det
    return (sy - slope * s1) / s0, slope


def close(a: float, b: float) -> bool:
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


values_st = st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=40)
gaps_st = st.lists(st.integers(1, 5), min_size=40, max_size=40)


@given(values_st, gaps_st)
def test_every_measure_equals_its_batch_computation(values: list[float], gaps: list[int]) -> None:
    """Each point against the rule computed afresh from all the windows before it: the line
    and the errors over the values as fitted (an anomaly's moved to the threshold)."""
    indexes = [sum(gaps[:i]) for i in range(len(values))]
    points = trend_points(series(values, indexes), CONFIG)
    assert len(points) == len(values)
    decay = CONFIG.decay
    fitted: list[float] = []  # each window's value as it joined the line and the errors
    errors: list[float] = []
    previous_side = 0  # the window before's anomaly: +1 above its forecast, -1 below, 0 none
    for i, p in enumerate(points):
        seen = values[: i + 1]
        assert p.windows == i + 1
        assert p.cumulative_count == 2 * (i + 1)
        assert close(p.cumulative_value, sum(seen))
        recent = seen[-CONFIG.average_windows :]
        assert close(p.moving_average, sum(recent) / len(recent))
        if not i:
            assert p.expected is None and p.zscore is None
            fitted.append(values[0])
        else:
            a, b = weighted_line(list(zip(indexes[:i], fitted)), decay)
            expected = max(0.0, a + b * (indexes[i] - indexes[i - 1]))
            assert p.expected is not None
            assert math.isclose(p.expected, expected, rel_tol=1e-6, abs_tol=1e-3)
            z, spread = None, 0.0
            if errors:  # weighted by decay per newer error, as a mean
                w = [decay ** (len(errors) - 1 - j) for j in range(len(errors))]
                measured = math.sqrt(sum(wj * e * e for wj, e in zip(w, errors)) / sum(w))
                spread = max(measured, 1e-9 * p.expected)
                if spread > 0.0 and math.isfinite((values[i] - p.expected) / spread):
                    z = (values[i] - p.expected) / spread
            warm = i - 1 >= CONFIG.warmup_windows
            if z is None:  # no spread to judge by: any change off an exact forecast is one
                assert p.zscore is None
                assert p.anomaly == (warm and bool(errors) and values[i] != p.expected)
            else:
                assert p.zscore is not None
                assert math.isclose(p.zscore, z, rel_tol=1e-6, abs_tol=1e-6)
                if abs(abs(z) - CONFIG.anomaly_z) > 1e-6:  # not on the threshold's edge
                    assert p.anomaly == (warm and abs(z) > CONFIG.anomaly_z)
            value = values[i]
            side = (1 if values[i] > p.expected else -1) if p.anomaly else 0
            # A spike is bounded by the spread it was scored against (float noise, for a series
            # forecast exactly); a second anomaly on the same side, or one after a gap, or one
            # with no spread at all (a forecast of 0, exact), joins whole.
            ahead = indexes[i] - indexes[i - 1]
            if side and spread > 0.0 and side != previous_side and ahead == 1:
                value = p.expected + side * CONFIG.anomaly_z * spread
            previous_side = side
            fitted.append(value)
            errors.append(value - p.expected)
        a, b = weighted_line(list(zip(indexes[: i + 1], fitted)), decay)
        assert math.isclose(p.forecast_next, max(0.0, a + b), rel_tol=1e-6, abs_tol=1e-3)


@given(values_st, st.lists(st.integers(1, 7), min_size=1, max_size=10))
def test_results_do_not_depend_on_batching_or_restarts(
    values: list[float], cuts: list[int]
) -> None:
    """Folding the windows in chunks, the state stored and reloaded between them (a batch
    boundary, a restart), gives the same bits as one fold."""
    windows = series(values)
    whole = trend_points(windows, CONFIG)
    stored = Trend().to_bytes()
    chunked = []
    at, i = 0, 0
    while at < len(windows):
        step = cuts[i % len(cuts)]
        trend = Trend.from_bytes(stored)
        for w in windows[at : at + step]:
            point = trend.observe(*w, CONFIG)
            assert point is not None
            chunked.append(point)
        stored = trend.to_bytes()
        at, i = at + step, i + 1
    assert chunked == whole


def test_a_steady_trend_is_forecast_and_no_anomaly() -> None:
    points = trend_points(series([10.0 + 2 * i for i in range(12)]), CONFIG)
    last = points[-1]
    assert math.isclose(last.forecast_next, 34.0)
    assert math.isclose(last.expected or 0.0, 32.0)
    assert not any(p.anomaly for p in points)


def test_a_jump_off_the_trend_is_an_anomaly_once_warm() -> None:
    values = [10.0, 11.0, 9.0, 10.5, 9.5, 10.0, 60.0, 10.0]
    points = trend_points(series(values), CONFIG)
    assert [p.anomaly for p in points] == [False] * 6 + [True, False]
    assert points[6].zscore is not None and points[6].zscore > CONFIG.anomaly_z


def _noisy_level(n: int, level: float = 300.0) -> list[float]:
    """A steady level with ±5% noise (a fixed sequence: the test is the same every run)."""
    rng = random.Random(3)
    return [level * (1 + rng.uniform(-0.05, 0.05)) for _ in range(n)]


def test_a_spike_neither_hides_the_next_jump_nor_bends_the_forecasts_after_it() -> None:
    """One 10× spike used to join the errors' spread whole: a 3× jump ten windows later scored
    |z| < 1, and the forecasts stayed 40% high for ten windows."""
    values = _noisy_level(60)
    values[30], values[40] = 3000.0, 900.0
    points = trend_points(series(values), TrendConfig())
    assert [i for i, p in enumerate(points) if p.anomaly] == [30, 40]
    for p in points[31:40]:
        assert p.expected is not None and abs(p.expected - 300.0) < 45.0
    assert not any(p.anomaly for p in points[41:])


def test_a_lasting_shift_is_flagged_until_the_forecast_has_caught_up() -> None:
    """A level that doubles and stays: its first windows are anomalies, then the trend has
    learnt the new level (each anomaly moves the line by the threshold's worth, no more)."""
    values = _noisy_level(30) + _noisy_level(40, level=600.0)
    points = trend_points(series(values), TrendConfig())
    flagged = [i for i, p in enumerate(points) if p.anomaly]
    assert flagged[0] == 30 and len(flagged) < 10
    last = points[-1]
    assert last.expected is not None and abs(last.expected - 600.0) < 60.0


def test_after_a_gap_in_a_trend_the_forecast_is_what_was_wrong_and_is_corrected_at_once() -> None:
    """A rise, then a day without orders, then a steady 400: the line extrapolated over the gap
    forecasts ~14,700. The first window after it is flagged, and joins whole (an extrapolation
    is no anchor to bound it by), so the next forecast is back near 400."""
    rng = random.Random(1)
    values = [100 + 10 * i + rng.uniform(-5, 5) for i in range(30)]
    values += [400 + rng.uniform(-5, 5) for _ in range(20)]
    indexes = list(range(30)) + [29 + 1440 + k for k in range(20)]
    points = trend_points(series(values, indexes), TrendConfig())
    assert [i for i, p in enumerate(points) if p.anomaly] == [30]
    assert all(abs((p.expected or 0.0) - 400.0) < 20.0 for p in points[31:])


def test_a_shift_in_a_quiet_series_is_flagged_for_a_few_windows_not_dozens() -> None:
    """Bounding every anomaly would move the line by a few (tiny) spreads a window: a doubling
    of a series with almost no noise was flagged for 47 windows. A second anomaly on the same
    side is a shift, and joins whole."""
    values = [100.0] * 60 + [100.01] + [100.0] * 30 + [200.0] * 60
    points = trend_points(series(values), TrendConfig())
    assert [i for i, p in enumerate(points) if p.anomaly] == [60, 91, 92, 93]
    assert abs((points[-1].expected or 0.0) - 200.0) < 10.0  # the line, forgetting the jump


def test_a_format_1_state_reads_its_spread_as_it_was_and_other_formats_are_refused() -> None:
    """Format 1 held the errors' running mean square where Σw·e² is now, and no Σw: the next
    score uses that mean square as the spread. A format this code does not know is refused,
    as format 2 is by the code before it (which would misread it)."""
    trend = Trend()
    for w in series([10.0, 12.0, 14.0]):
        trend.observe(*w, CONFIG)
    t = trend
    format_1 = struct.pack(
        ">BqqqqddddddddH",
        *(1, t.last_start, t.last_index, t.windows, t.cumulative_count, t.cumulative_value),
        *(4.0, 0.0, t.s0, t.s1, t.s2, t.sy, t.sdy, len(t.recent)),
    ) + struct.pack(f">{len(t.recent)}d", *t.recent)
    old = Trend.from_bytes(format_1)
    point = old.observe(3 * SIZE, 4 * SIZE, 1, 30.0, CONFIG)
    assert point is not None and point.expected is not None and point.zscore is not None
    assert math.isclose(point.zscore, (30.0 - point.expected) / 2.0)
    assert Trend.from_bytes(old.to_bytes()) == old  # written back as format 2
    with pytest.raises(ValueError, match="unknown trend state format 03"):
        Trend.from_bytes(b"\x03" + old.to_bytes()[1:])


def test_no_anomaly_before_the_warmup() -> None:
    """Before `warmup_windows` forecast errors there is no baseline to judge by."""
    points = trend_points(series([10.0, 11.0, 500.0]), CONFIG)
    assert [p.zscore is None for p in points] == [True, True, False]
    assert not any(p.anomaly for p in points)


def test_a_change_in_a_constant_series_is_an_anomaly() -> None:
    """Twice, as a shift in a noisy series: the first joins as far as the threshold of its
    spread (float noise), the second, on the same side, joins whole and the line learns it."""
    points = trend_points(series([5.0] * 6 + [5.5] * 30), CONFIG)
    assert [i for i, p in enumerate(points) if p.anomaly] == [6, 7]
    assert abs((points[-1].expected or 0.0) - 5.5) < 0.05


def test_a_spike_in_a_constant_series_neither_bends_the_forecasts_nor_hides_a_collapse() -> None:
    """A series forecast exactly has only float noise for a spread: a spike joins as far as
    that (as in a noisy series), not whole. Joined whole, one 10x spike lifted the forecasts
    from 100 to 431 and the spread to its error, so a later fall to a tenth went unflagged."""
    values = [100.0] * 12 + [1000.0] + [100.0] * 3 + [10.0] * 3
    points = trend_points(series(values), TrendConfig())
    assert [i for i, p in enumerate(points) if p.anomaly] == [12, 16, 17]
    assert all(abs((p.expected or 0.0) - 100.0) < 1e-3 for p in points[13:17])


def test_errors_too_small_for_a_float_make_no_infinite_score() -> None:
    """Tiny values underflow every error to 0: a later change is an anomaly with no z-score,
    not an infinity (which JSON cannot hold)."""
    points = trend_points(series([1e-300] * 6 + [1.0, 1.0]), CONFIG)
    assert points[-2].zscore is None and points[-2].anomaly
    assert all(p.zscore is None or math.isfinite(p.zscore) for p in points)


def test_a_window_not_after_the_last_is_skipped_and_changes_nothing() -> None:
    trend = Trend()
    assert trend.observe(SIZE, 2 * SIZE, 1, 3.0, CONFIG) is not None
    before = trend.to_bytes()
    assert trend.observe(SIZE, 2 * SIZE, 1, 3.0, CONFIG) is None  # re-sent
    assert trend.observe(0, SIZE, 1, 3.0, CONFIG) is None  # older
    assert trend.to_bytes() == before


def test_forecasts_are_never_negative() -> None:
    points = trend_points(series([100.0, 50.0, 1.0, 1.0]), CONFIG)
    assert points[2].forecast_next == 0.0
    assert points[3].expected == 0.0  # the line goes below 0 there: no revenue is negative


def test_summary_is_where_the_key_stands() -> None:
    trend = Trend()
    for w in series([4.0, 6.0, 8.0, 10.0]):
        trend.observe(*w, CONFIG)
    s = trend.summary()
    assert s["windows"] == 4 and s["cum_orders"] == 8 and s["cum_revenue"] == 28.0
    assert s["last_window_start"] == 3 * SIZE
    assert math.isclose(s["moving_avg"], 8.0)  # the last 3
    assert math.isclose(s["forecast_next"], 12.0)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("average_windows", 0),
        ("half_life_windows", float("nan")),
        ("anomaly_z", 0.0),
        ("warmup_windows", 0),
    ],
)
def test_config_out_of_range_is_refused_by_name(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=f"^{field} must be from"):
        TrendConfig(**{field: value})  # type: ignore[arg-type]
