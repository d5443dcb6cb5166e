"""Per-partition stream time and watermark: the only clock windows ever close on."""

from __future__ import annotations

from dataclasses import dataclass

from tables.windows import Window


@dataclass(slots=True)
class StreamTime:
    """Stream time is the max event time seen on one partition (ms); watermark = it − grace.

    A window [start, end) is closed once `end <= watermark`; an event whose every window is
    closed is late. No wall clock is involved, so a replay decides exactly as live did.
    """

    grace_ms: int
    max_event_ms: int | None = None

    def observe(self, ts: int) -> None:
        if self.max_event_ms is None or ts > self.max_event_ms:
            self.max_event_ms = ts

    @property
    def watermark(self) -> int | None:
        if self.max_event_ms is None:
            return None
        return self.max_event_ms - self.grace_ms

    def is_closed(self, window: Window) -> bool:
        wm = self.watermark
        return wm is not None and window.end <= wm
