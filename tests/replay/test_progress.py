"""Replay progress: the same figures as the bar, as Prometheus gauges."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import REGISTRY

from replay.progress import ReplayProgress


def _gauge(name: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"version": "42", "pipeline": "orders"})


def test_progress_sets_done_total_rate_and_eta(caplog: pytest.LogCaptureFixture) -> None:
    progress = ReplayProgress(42, "orders", total=1_000, show_bar=False)
    progress._last_log = -1e9  # due for a log line
    with caplog.at_level(logging.WARNING, logger="kappa.replay"):
        progress.advance(250)
    assert _gauge("kappa_replay_events_total") == 1_000
    assert _gauge("kappa_replay_events_done") == 250
    rate = _gauge("kappa_replay_events_per_second")
    eta = _gauge("kappa_replay_eta_seconds")
    assert rate is not None and rate > 0
    assert eta is not None and eta == pytest.approx(750 / rate, rel=0.05)
    assert "250/1000 events" in caplog.text  # no terminal: a log line instead of a bar
    progress.close()
