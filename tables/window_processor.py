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
        evs = events if isinstance(events, list) else list(events)
        found = self.process_columns(
            [e.key for e in evs], [e.ts for e in evs], [e.value for e in evs], clock, state
        )
        late = [LateEvent(evs[e.record].record, e.ts, e.watermark) for e in found.late]
        return BatchResult(found.updated, found.closed, late, found.created)

    def process_columns(
        self,
        keys: Sequence[str],
        times: Sequence[int],
        values: Sequence[float],
        clock: StreamTime,
        state: WindowState,
    ) -> BatchResult[int]:
        """`process` over a batch given as columns (the hot path: no object per event).

        Event i is (keys[i], times[i], values[i]); a late event is reported with its index i
        as `record`. Each window's values are applied in event order (`Moments.add_many`), so
        the result is bit-identical however the stream is split into batches.
        """
        result: BatchResult[int] = BatchResult()
        groups: dict[WindowKey, list[float]] = {}
        if isinstance(self.spec, TumblingWindows):
            self._assign_tumbling(
                self.spec.size_ms, keys, times, values, clock, groups, result.late
            )
        else:
            self._assign_general(keys, times, values, clock, groups, result.late)

        if groups:
            touched = list(groups)
            working: dict[WindowKey, Moments] = {}
            created = result.created
            for k, m in zip(touched, state.get_many(touched)):
                if m is None:
                    created.add(k)
                    m = Moments()
                m.add_many(groups[k])
                working[k] = m
            result.updated = working

        watermark = clock.watermark
        if watermark is not None:
            result.closed = self._close(watermark, state, result.updated)
        return result

    def _assign_tumbling(
        self,
        size: int,
        keys: Sequence[str],
        times: Sequence[int],
        values: Sequence[float],
        clock: StreamTime,
        groups: dict[WindowKey, list[float]],
        late: list[LateEvent[int]],
    ) -> None:
        """The general rule, inlined for one window per event: values grouped by window."""
        if not times:
            return
        grace = self.grace_ms
        max_ts = clock.max_event_ms
        if max_ts is None:
            max_ts = times[0]
        get = groups.get
        for i, key, ts, value in zip(range(len(times)), keys, times, values):
            if ts > max_ts:
                max_ts = ts
            start = ts - ts % size
            end = start + size
            if end > max_ts - grace:
                wk = (end, start, key)
                vs = get(wk)
                if vs is None:
                    groups[wk] = [value]
                else:
                    vs.append(value)
            else:
                late.append(LateEvent(i, ts, max_ts - grace))
        clock.max_event_ms = max_ts

    def _assign_general(
        self,
        keys: Sequence[str],
        times: Sequence[int],
        values: Sequence[float],
        clock: StreamTime,
        groups: dict[WindowKey, list[float]],
        late: list[LateEvent[int]],
    ) -> None:
        """Any window spec: an event feeds each of its windows that is still open."""
        assign = self.spec.assign
        observe = clock.observe
        grace = self.grace_ms
        for i, key, ts, value in zip(range(len(times)), keys, times, values):
            observe(ts)
            watermark = clock.max_event_ms - grace  # type: ignore[operator]
            landed = False
            for w in assign(ts):
                if w.end > watermark:
                    groups.setdefault((w.end, w.start, key), []).append(value)
                    landed = True
            if not landed:
                late.append(LateEvent(i, ts, watermark))

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
