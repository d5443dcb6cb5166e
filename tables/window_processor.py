"""Batch event-time windowing: a batch of events in, (updated, closed, late) out.

Pure logic in the spirit of Quix Streams' `process_window`: state is reached through the small
`WindowState` protocol, the clock is the partition's `StreamTime`, and nothing here reads the
wall clock. Feeding the same per-partition sequence in any batch split gives the same result.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

from tables.aggregates import Moments
from tables.stream_time import StreamTime
from tables.windows import TumblingWindows, Window, WindowSpec

R = TypeVar("R")

# (window end, window start, key): ordered so closable windows are a prefix in end order.
WindowKey = tuple[int, int, str]


@dataclass(frozen=True, slots=True)
class TimedValue(Generic[R]):
    """One event for windowing: its key, event time (ms), value, and the caller's record."""

    key: str
    ts: int
    value: float
    record: R


class WindowState(Protocol):
    """Where open windows live between batches (RocksDB in production, a dict in tests)."""

    def get_many(self, keys: Sequence[WindowKey]) -> list[Moments | None]: ...

    def expiring(self, watermark: int) -> Iterable[tuple[WindowKey, Moments]]:
        """Open windows with end <= watermark, in (end, start, key) order."""
        ...


@dataclass(slots=True)
class LateEvent(Generic[R]):
    record: R
    ts: int
    watermark: int

    @property
    def late_by_ms(self) -> int:
        """How far behind the watermark the event was (ms)."""
        return self.watermark - self.ts


@dataclass(slots=True)
class BatchResult(Generic[R]):
    updated: dict[WindowKey, Moments] = field(default_factory=dict)
    closed: list[tuple[WindowKey, Moments]] = field(default_factory=list)
    late: list[LateEvent[R]] = field(default_factory=list)
    created: set[WindowKey] = field(default_factory=set)  # not in the state before this batch


def window_of(key: WindowKey) -> Window:
    return Window(key[1], key[0])


@dataclass(frozen=True, slots=True)
class WindowProcessor:
    """Aggregates events into event-time windows and closes them on the watermark."""

    spec: WindowSpec
    grace_ms: int

    def process(
        self,
        events: Iterable[TimedValue[R]],
        clock: StreamTime,
        state: WindowState,
    ) -> BatchResult[R]:
        """Apply one partition's batch (in offset order); `clock` is advanced in place.

        `updated` holds every window changed by the batch that is still open afterwards;
        `closed` the windows whose end the watermark passed, final, in (end, start, key) order;
        `late` the events whose every window had already closed when they arrived.
        """
        result: BatchResult[R] = BatchResult()
        assign = self.spec.assign
        observe = clock.observe
        grace = self.grace_ms
        contributions: list[tuple[WindowKey, float]] = []
        if isinstance(self.spec, TumblingWindows):
            self._assign_tumbling(events, clock, contributions, result.late)
            events = ()
        for ev in events:
            observe(ev.ts)
            watermark = clock.max_event_ms - grace  # type: ignore[operator]
            landed = False
            for w in assign(ev.ts):
                if w.end > watermark:
                    contributions.append(((w.end, w.start, ev.key), ev.value))
                    landed = True
            if not landed:
                result.late.append(LateEvent(ev.record, ev.ts, watermark))

        if contributions:
            touched = list(dict.fromkeys(k for k, _ in contributions))
            current = state.get_many(touched)
            working: dict[WindowKey, Moments] = {}
            for k, m in zip(touched, current):
                if m is None:
                    result.created.add(k)
                    m = Moments()
                working[k] = m
            for k, v in contributions:
                working[k].add(v)
            result.updated = working

        watermark = clock.watermark
        if watermark is not None:
            result.closed = self._close(watermark, state, result.updated)
        return result

    def _assign_tumbling(
        self,
        events: Iterable[TimedValue[R]],
        clock: StreamTime,
        contributions: list[tuple[WindowKey, float]],
        late: list[LateEvent[R]],
    ) -> None:
        """The same rule as the general loop, inlined for one window per event."""
        size = self.spec.size_ms
        grace = self.grace_ms
        max_ts = clock.max_event_ms
        add = contributions.append
        for ev in events:
            ts = ev.ts
            if max_ts is None or ts > max_ts:
                max_ts = ts
            start = ts - ts % size
            watermark = max_ts - grace
            if start + size > watermark:
                add(((start + size, start, ev.key), ev.value))
            else:
                late.append(LateEvent(ev.record, ts, watermark))
        clock.max_event_ms = max_ts

    def flush(
        self, state: WindowState, pending: dict[WindowKey, Moments]
    ) -> list[tuple[WindowKey, Moments]]:
        """Close every open window (end of a bounded replay): as if the watermark were +inf."""
        return self._close(math.inf, state, pending)  # type: ignore[arg-type]

    @staticmethod
    def _close(
        watermark: int, state: WindowState, updated: dict[WindowKey, Moments]
    ) -> list[tuple[WindowKey, Moments]]:
        closed: dict[WindowKey, Moments] = {}
        for k, m in state.expiring(watermark):
            closed[k] = updated.pop(k, m)
        for k in [k for k in updated if k[0] <= watermark]:
            closed[k] = updated.pop(k)
        return sorted(closed.items())


class MemoryWindowState:
    """A dict-backed `WindowState` for tests and for the batch reference computation."""

    def __init__(self) -> None:
        self.windows: dict[WindowKey, Moments] = {}

    def get_many(self, keys: Sequence[WindowKey]) -> list[Moments | None]:
        return [self.windows.get(k) for k in keys]

    def expiring(self, watermark: int) -> Iterable[tuple[WindowKey, Moments]]:
        return sorted((k, m) for k, m in self.windows.items() if k[0] <= watermark)

    def apply(self, result: BatchResult[object]) -> None:
        """Write back a batch result: updated windows stored, closed ones removed."""
        self.windows.update(result.updated)
        for k, _ in result.closed:
            self.windows.pop(k, None)
