"""Replay progress: a rich bar on a terminal, log lines otherwise, and Prometheus gauges."""

from __future__ import annotations

import sys
import time
from typing import Any

from prometheus_client import Gauge

from app.cli_output import PROGRESS

DONE = Gauge(
    "kappa_replay_events_done", "Replay: source records processed", ["version", "pipeline"]
)
TOTAL = Gauge(
    "kappa_replay_events_planned", "Replay: source records to process", ["version", "pipeline"]
)
RATE = Gauge("kappa_replay_events_per_second", "Replay: current rate", ["version", "pipeline"])
ETA = Gauge("kappa_replay_eta_seconds", "Replay: estimated seconds left", ["version", "pipeline"])

LOG_EVERY_S = 5.0


class ReplayProgress:
    def __init__(self, version: int, pipeline: str, total: int, show_bar: bool) -> None:
        self.labels = (str(version), pipeline)
        self.total = total
        self.done = 0
        self.started = time.monotonic()
        self._last_log = self.started
        TOTAL.labels(*self.labels).set(total)
        DONE.labels(*self.labels).set(0)
        self._bar: Any = None
        if show_bar and sys.stderr.isatty():
            self._bar = _shared_bar()
            self._task = self._bar.add_task(f"replay v{version} {pipeline}", total=total, rate=0.0)
        else:  # a line at once: a stage shorter than LOG_EVERY_S said nothing until the summary
            PROGRESS.info("replay v%s %s: %d events to read", *self.labels, total)

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        elapsed = max(now - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        DONE.labels(*self.labels).set(self.done)
        RATE.labels(*self.labels).set(rate)
        ETA.labels(*self.labels).set(max(eta, 0.0))
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, rate=rate)
        elif now - self._last_log >= LOG_EVERY_S:
            self._last_log = now
            PROGRESS.info(
                "replay v%s %s: %d/%d events (%.0f ev/s, ETA %.0fs)",
                *self.labels,
                self.done,
                self.total,
                rate,
                eta,
            )

    def close(self) -> None:
        if self._bar is not None:
            self._bar = None
            _release_bar()


# One display for every pipeline replaying at the same time (rich shows one live display at
# a time): a bar per pipeline, stopped when the last one closes.
_bar: Any = None
_bar_users = 0


def _shared_bar() -> Any:
    global _bar, _bar_users
    if _bar is None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )

        _bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>9,.0f} ev/s"),
            TimeRemainingColumn(),
            transient=False,
        )
        _bar.start()
    _bar_users += 1
    return _bar


def _release_bar() -> None:
    global _bar, _bar_users
    _bar_users -= 1
    if _bar_users == 0 and _bar is not None:
        _bar.stop()
        _bar = None
