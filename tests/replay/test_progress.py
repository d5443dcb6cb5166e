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
    with caplog.at_level(logging.INFO, logger="kappa.progress"):
        progress.advance(250)
    assert _gauge("kappa_replay_events_planned") == 1_000
    assert _gauge("kappa_replay_events_done") == 250
    rate = _gauge("kappa_replay_events_per_second")
    eta = _gauge("kappa_replay_eta_seconds")
    assert rate is not None and rate > 0
    assert eta is not None and eta == pytest.approx(750 / rate, rel=0.05)
    (line,) = [r for r in caplog.records if "/1000 events" in r.getMessage()]  # not a bar
    assert "250/1000 events" in line.getMessage() and line.levelname == "INFO"
    progress.close()


def test_pipelines_replaying_at_once_share_one_display(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich shows one live display at a time: a second one would fail (LiveError)."""
    import replay.progress as progress_module

    monkeypatch.setattr(progress_module.sys.stderr, "isatty", lambda: True)
    first = ReplayProgress(42, "user-totals", total=10, show_bar=True)
    second = ReplayProgress(42, "product-trends", total=20, show_bar=True)
    bar = progress_module._bar
    assert bar is not None and [t.description for t in bar.tasks] == [
        "replay v42 user-totals",
        "replay v42 product-trends",
    ]
    first.advance(10)
    first.close()
    assert progress_module._bar is bar and bar.live.is_started  # the other still shows
    second.close()
    assert progress_module._bar is None and not bar.live.is_started


def test_a_stage_says_at_once_how_much_it_reads(caplog: pytest.LogCaptureFixture) -> None:
    """Without a terminal a stage shorter than LOG_EVERY_S said nothing before its summary."""
    with caplog.at_level(logging.INFO, logger="kappa.progress"):
        progress = ReplayProgress(43, "orders", total=293_000, show_bar=False)
    (line,) = caplog.records
    assert line.getMessage() == "replay v43 orders: 293000 events to read"
    progress.close()
