"""Per-product demand levels and direction: the fold equals its parts composed by hand, and
any batching or restart gives the same bits."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tables.classification import OnlineLogistic
from tables.clustering import LineKMeans
from tables.signals import FEATURES, Signals, TrendInput

SIZE = 60_000
revenues = st.lists(st.floats(0, 1e9, allow_nan=False), min_size=1, max_size=40)


def inputs(xs: list[float]) -> list[TrendInput]:
    return [TrendInput(i * SIZE, (i + 1) * SIZE, x, x * 0.9 + 1, x * 1.1) for i, x in enumerate(xs)]


@given(revenues, st.integers(1, 4))
def test_levels_and_direction_are_the_models_fed_in_order(xs: list[float], k: int) -> None:
    s = Signals(k)
    km, model = LineKMeans(k), OnlineLogistic(FEATURES)
    previous: tuple[list[float], float] | None = None
    for t in inputs(xs):
        point = s.observe(t)
        assert point is not None
        if previous is not None:  # the last window's features, labelled by this one
            model.learn(previous[0], t.revenue > previous[1])
        level = km.add(math.log1p(t.revenue))
        known = len(km.centres)
        x = [
            1.0,
            math.log1p(t.revenue) - math.log1p(t.moving_average),
            math.log1p(t.forecast_next) - math.log1p(t.revenue),
            level / (known - 1) - 0.5 if known > 1 else 0.0,
        ]
        previous = (x, t.revenue)
        assert (point.level, point.levels) == (level, known)
        assert point.level_revenue == math.expm1(km.centres[level])
        assert point.p_up_next == model.probability(x)
        assert (point.accuracy, point.scored) == (model.accuracy, model.scored)
    assert s.classifier.scored == len(xs) - 1  # every window but the last has its label


@given(revenues, st.integers(1, 4), st.data())
def test_restarts_anywhere_give_the_same_bits(xs: list[float], k: int, data: st.DataObject) -> None:
    whole = Signals(k)
    want = [whole.observe(t) for t in inputs(xs)]
    cuts = data.draw(st.sets(st.integers(0, len(xs))))
    s, got = Signals(k), []
    for i, t in enumerate(inputs(xs)):
        if i in cuts:
            s = Signals.from_bytes(s.to_bytes())
        got.append(s.observe(t))
    assert got == want
    assert Signals.from_bytes(s.to_bytes()).to_bytes() == whole.to_bytes()


def test_a_point_at_or_before_the_last_one_is_skipped() -> None:
    s = Signals()
    first, second = inputs([5.0, 7.0])
    assert s.observe(first) is not None and s.observe(second) is not None
    before = s.to_bytes()
    assert s.observe(second) is None and s.observe(first) is None
    assert s.to_bytes() == before


def test_values_no_trend_point_carries_are_refused() -> None:
    s = Signals()
    for bad in (TrendInput(0, SIZE, -1.0, 1.0, 1.0), TrendInput(0, SIZE, 1.0, 1.0, math.inf)):
        with pytest.raises(ValueError, match="finite and >= 0"):
            s.observe(bad)
    assert s.last_start is None and s.kmeans.centres == []


def test_a_state_value_of_another_length_is_refused() -> None:
    s = Signals()
    s.observe(inputs([5.0])[0])
    raw = s.to_bytes()
    assert Signals.from_bytes(raw).to_bytes() == raw
    for broken in (raw[:-1], raw + b"\x00", raw[:20]):
        with pytest.raises(ValueError):
            Signals.from_bytes(broken)
