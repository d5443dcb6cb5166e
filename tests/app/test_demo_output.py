"""What `kappa demo` prints for a closed window and for an anomaly."""

from __future__ import annotations

from app.demo_lines import format_anomaly, format_quiet, format_ranking, format_window


def test_a_window_and_an_anomaly_are_one_line_each() -> None:
    window = {
        "product_id": "p00042",
        "window_start": 1_700_000_040_000,
        "window_end": 1_700_000_100_000,
        "count": 2,
        "sum": 25.0,
        "mean": 12.5,
        "min": 5.0,
        "max": 20.0,
        "std": 7.5,
    }
    assert format_window(window) == (
        "  p00042  [22:14:00, 22:15:00)  count=2    sum=     25.00  mean=   12.50  "
        "min=    5.00  max=   20.00  std=    7.50"
    )
    point = {"product_id": "p00042", "window_start": 1_700_000_040_000, "revenue": 125.0}
    anomaly = {**point, "expected": 19.6, "zscore": 5.21, "anomaly": True}
    assert format_anomaly(anomaly) == (
        "  p00042  [22:14:00] ANOMALY  revenue=125.00, forecast 19.60 (z=+5.2)"
    )
    exact = {**anomaly, "zscore": None}  # off a series that was forecast exactly
    assert format_anomaly(exact).endswith("(z=-)")


def test_a_ranking_shows_its_first_three() -> None:
    top = [{"product_id": f"p{i}", "revenue": 10.0 - i, "count": 1} for i in range(5)]
    value = {"window_start": 1_700_000_040_000, "window_end": 1_700_000_100_000, "top": top}
    assert format_ranking(value) == ("     top  [22:14:00] p0 10.00, p1 9.00, p2 8.00")


def test_a_quiet_product_shows_its_silence() -> None:
    value = {
        "product_id": "p00007",
        "last_window_start": 1_700_000_040_000,
        "quiet_from": 1_700_000_100_000,
        "quiet_until": 1_700_000_220_000,
        "windows": 2,
        "orders_per_window": 4.9,
        "expected_orders": 9.8,
    }
    assert format_quiet(value) == (
        "  p00007  [22:15:00, 22:17:00)  QUIET  no order in 2 window(s), 9.8 expected"
    )
