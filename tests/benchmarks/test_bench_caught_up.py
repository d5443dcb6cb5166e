"""When the live benchmark counts a worker's pipelines as caught up: each pipeline that processed
records exports a lag, and every lag is 0."""

from __future__ import annotations

from benchmarks.live import WorkerMetrics


def test_every_lag_zero_is_caught_up() -> None:
    m = WorkerMetrics(lag={("orders", 0): 0, ("user-totals", 1): 0}, pipelines_in={"orders"})
    assert m.caught_up()


def test_any_lag_left_is_not() -> None:
    m = WorkerMetrics(lag={("orders", 0): 0, ("user-totals", 1): 3}, pipelines_in={"orders"})
    assert not m.caught_up()


def test_a_pipeline_with_records_but_no_lag_yet_is_not() -> None:
    """Its partitions' states are still opening, or its source not fetched yet."""
    m = WorkerMetrics(lag={("orders", 0): 0}, pipelines_in={"orders", "product-trends"})
    assert not m.caught_up()
