"""The trend analytics without a broker: each measure against a plain batch computation,
batching independence, state round trips, and what counts as an anomaly."""

from __future__ import annotations

import math

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
    indexes = [sum(gaps[:i]) for i in range(len(values))]
    points = trend_points(series(values, indexes), CONFIG)
    assert len(points) == len(values)
    for i, p in enumerate(points):
        seen = values[: i + 1]
        assert p.windows == i + 1
        assert p.cumulative_count == 2 * (i + 1)
        assert close(p.cumulative_value, sum(seen))
        recent = seen[-CONFIG.average_windows :]
        assert close(p.moving_average, sum(recent) / len(recent))
        a, b = weighted_line(list(zip(indexes[: i + 1], seen)), CONFIG.decay)
        assert math.isclose(p.forecast_next, max(0.0, a + b), rel_tol=1e-6, abs_tol=1e-3)
        if i:
            a, b = weighted_line(list(zip(indexes[:i], values[:i])), CONFIG.decay)
            ahead = indexes[i] - indexes[i - 1]
            assert p.expected is not None
            assert math.isclose(p.expected, a + b * ahead, rel_tol=1e-6, abs_tol=1e-3)
        else:
            assert p.expected is None
    # z: each error over the weighted RMS of the errors before it (the first one weighs in
    # whole, every later one by 1 − decay, all shrinking by decay per newer error)
    errors = [p.value - p.expected for p in points if p.expected is not None]
    decay = CONFIG.decay
    for m, p in enumerate(points[2:], start=1):
        square = decay ** (m - 1) * errors[0] ** 2 + sum(
            (1 - decay) * decay ** (m - j) * errors[j - 1] ** 2 for j in range(2, m + 1)
        )
        spread = max(math.sqrt(square), 1e-9 * abs(p.expected or 0.0))
        if spread == 0.0 or not math.isfinite(errors[m] / spread):  # no finite z to give
            assert p.zscore is None
        else:
            assert p.zscore is not None
            assert math.isclose(p.zscore, errors[m] / spread, rel_tol=1e-6, abs_tol=1e-6)


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


def test_no_anomaly_before_the_warmup() -> None:
    """Before `warmup_windows` forecast errors there is no baseline to judge by."""
    points = trend_points(series([10.0, 11.0, 500.0]), CONFIG)
    assert [p.zscore is None for p in points] == [True, True, False]
    assert not any(p.anomaly for p in points)


def test_a_change_in_a_constant_series_is_an_anomaly() -> None:
    points = trend_points(series([5.0] * 6 + [5.5]), CONFIG)
    assert [p.anomaly for p in points] == [False] * 6 + [True]


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
    points = trend_points(series([100.0, 50.0, 1.0]), CONFIG)
    assert points[-1].forecast_next == 0.0


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
