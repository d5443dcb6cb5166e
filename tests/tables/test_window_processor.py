"""WindowProcessor: a batch in, (updated, closed, late) out; any batching == a plain computation.

The property tests are the project's key acceptance test: random multi-partition event streams
with bounded disorder, split into arbitrary batches and interleaved arbitrarily, must close and
flush exactly the windows (and name exactly the late events) that a plain per-event batch
computation does, with the same aggregates.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from tables.aggregates import Moments
from tables.stream_time import StreamTime
from tables.window_processor import (
    BatchResult,
    LateEvent,
    MemoryWindowState,
    TimedValue,
    WindowKey,
    WindowProcessor,
    window_of,
)
from tables.windows import HoppingWindows, TumblingWindows, Window, WindowSpec

Record = tuple[int, int]  # (partition, index in that partition's sequence)


def ev(key: str, ts: int, value: float, record: object = None) -> TimedValue[object]:
    return TimedValue(key, ts, value, record if record is not None else (key, ts))


def moments_of(values: list[float]) -> Moments:
    m = Moments()
    for v in values:
        m.add(v)
    return m


def run(
    processor: WindowProcessor,
    batch: list[TimedValue[object]],
    clock: StreamTime,
    state: MemoryWindowState,
) -> BatchResult[object]:
    result = processor.process(batch, clock, state)
    state.apply(result)
    return result


# ============================================================================================
# Examples
# ============================================================================================


def test_events_aggregate_into_open_windows() -> None:
    proc = WindowProcessor(TumblingWindows(10), grace_ms=5)
    clock, state = StreamTime(5), MemoryWindowState()
    result = run(proc, [ev("a", 1, 1.0), ev("a", 3, 2.0), ev("b", 12, 5.0)], clock, state)

    assert clock.watermark == 7
    assert result.closed == []  # [0, 10) ends at 10 > watermark 7
    assert result.late == []
    assert set(result.updated) == {(10, 0, "a"), (20, 10, "b")}
    assert result.updated[(10, 0, "a")].as_dict() == moments_of([1.0, 2.0]).as_dict()
    assert result.updated[(20, 10, "b")].count == 1
    assert set(state.windows) == {(10, 0, "a"), (20, 10, "b")}


def test_window_closes_once_watermark_reaches_its_end_and_is_emitted_once() -> None:
    proc = WindowProcessor(TumblingWindows(10), grace_ms=5)
    clock, state = StreamTime(5), MemoryWindowState()
    run(proc, [ev("a", 1, 1.0), ev("a", 3, 2.0)], clock, state)

    result = run(proc, [ev("b", 14, 7.0)], clock, state)  # watermark 9: still open
    assert result.closed == []
    result = run(proc, [ev("b", 15, 8.0)], clock, state)  # watermark 10 == end: closed
    assert [k for k, _ in result.closed] == [(10, 0, "a")]
    closed = result.closed[0][1]
    assert (closed.count, closed.total, closed.min, closed.max) == (2, 3.0, 1.0, 2.0)
    assert (10, 0, "a") not in state.windows
    assert (10, 0, "a") not in result.updated  # an untouched window is not "updated"

    result = run(proc, [ev("b", 16, 1.0)], clock, state)
    assert result.closed == []  # not emitted a second time


def test_late_event_is_reported_with_its_watermark_and_not_aggregated() -> None:
    proc = WindowProcessor(TumblingWindows(10), grace_ms=5)
    clock, state = StreamTime(5), MemoryWindowState()
    run(proc, [ev("a", 1, 1.0), ev("a", 16, 1.0)], clock, state)  # watermark 11

    result = run(proc, [ev("a", 4, 100.0, "late-one"), ev("a", 10, 2.0, "on-time")], clock, state)
    assert [(e.record, e.ts, e.watermark, e.late_by_ms) for e in result.late] == [
        ("late-one", 4, 11, 7)
    ]
    assert set(result.updated) == {(20, 10, "a")}
    assert result.updated[(20, 10, "a")].total == 3.0  # 1.0 at ts 16 + 2.0 at ts 10


def test_late_is_decided_against_the_watermark_at_the_event_not_at_batch_end() -> None:
    proc = WindowProcessor(TumblingWindows(10), grace_ms=0)
    clock, state = StreamTime(0), MemoryWindowState()
    # ts 5 arrives before ts 30 in the same batch: on time, although the batch ends at wm 30
    result = run(
        proc, [ev("a", 5, 1.0, "early"), ev("a", 30, 1.0), ev("a", 6, 1.0, "x")], clock, state
    )
    assert [e.record for e in result.late] == ["x"]
    assert [(k, m.count) for k, m in result.closed] == [((10, 0, "a"), 1)]
    assert set(result.updated) == {(40, 30, "a")}


def test_event_exactly_at_the_watermark_boundary() -> None:
    proc = WindowProcessor(TumblingWindows(10), grace_ms=0)
    clock, state = StreamTime(0), MemoryWindowState()
    run(proc, [ev("a", 20, 1.0)], clock, state)  # watermark 20
    result = run(proc, [ev("a", 9, 1.0, "in [0,10)"), ev("a", 19, 1.0, "in [10,20)")], clock, state)
    # both windows end <= 20: both events are late
    assert [e.record for e in result.late] == ["in [0,10)", "in [10,20)"]
    result = run(proc, [ev("a", 20, 2.0, "in [20,30)")], clock, state)
    assert result.late == []
    assert state.windows[(30, 20, "a")].count == 2


def test_window_updated_and_closed_in_the_same_batch_carries_the_new_values() -> None:
    proc = WindowProcessor(TumblingWindows(10), grace_ms=0)
    clock, state = StreamTime(0), MemoryWindowState()
    run(proc, [ev("a", 1, 1.0)], clock, state)
    result = run(proc, [ev("a", 2, 2.0), ev("b", 3, 4.0), ev("a", 25, 0.5)], clock, state)
    closed = dict(result.closed)
    assert list(closed) == [(10, 0, "a"), (10, 0, "b")]
    assert closed[(10, 0, "a")].as_dict() == moments_of([1.0, 2.0]).as_dict()
    assert closed[(10, 0, "b")].total == 4.0
    assert set(result.updated) == {(30, 20, "a")}  # closed windows are not also "updated"
    assert set(state.windows) == {(30, 20, "a")}


def test_closed_windows_come_in_end_start_key_order() -> None:
    proc = WindowProcessor(HoppingWindows(10, 5), grace_ms=20)
    clock, state = StreamTime(20), MemoryWindowState()
    run(proc, [ev("z", 7, 1.0), ev("a", 3, 1.0), ev("m", 12, 1.0)], clock, state)
    assert len(state.windows) == 6  # all still open (watermark -8)
    result = run(proc, [ev("q", 200, 1.0)], clock, state)
    keys = [k for k, _ in result.closed]
    assert keys == [
        (5, -5, "a"),
        (10, 0, "a"),
        (10, 0, "z"),
        (15, 5, "m"),
        (15, 5, "z"),
        (20, 10, "m"),
    ]


def test_hopping_event_with_some_windows_closed_only_feeds_the_open_ones() -> None:
    proc = WindowProcessor(HoppingWindows(10, 5), grace_ms=0)
    clock, state = StreamTime(0), MemoryWindowState()
    run(proc, [ev("a", 10, 1.0)], clock, state)  # watermark 10: [0,10) closed, [5,15) open
    result = run(proc, [ev("a", 7, 3.0)], clock, state)  # in [0,10) and [5,15)
    assert result.late == []
    assert result.updated[(15, 5, "a")].as_dict() == moments_of([1.0, 3.0]).as_dict()
    assert (10, 0, "a") not in result.updated
    assert all(k != (10, 0, "a") for k, _ in result.closed)


def test_empty_batch_changes_nothing() -> None:
    proc = WindowProcessor(TumblingWindows(10), grace_ms=3)
    clock, state = StreamTime(3), MemoryWindowState()
    result = run(proc, [], clock, state)
    assert (result.updated, result.closed, result.late) == ({}, [], [])
    assert clock.max_event_ms is None

    run(proc, [ev("a", 5, 1.0)], clock, state)
    result = run(proc, [], clock, state)
    assert (result.updated, result.closed, result.late) == ({}, [], [])
    assert clock.watermark == 2
    assert set(state.windows) == {(10, 0, "a")}


def test_flush_closes_every_open_window_in_order() -> None:
    proc = WindowProcessor(TumblingWindows(10), grace_ms=1000)
    clock, state = StreamTime(1000), MemoryWindowState()
    run(proc, [ev("b", 25, 1.0), ev("a", 25, 2.0), ev("a", 3, 3.0), ev("c", -4, 4.0)], clock, state)
    flushed = proc.flush(state, {})
    assert [k for k, _ in flushed] == [(0, -10, "c"), (10, 0, "a"), (30, 20, "a"), (30, 20, "b")]
    assert [m.total for _, m in flushed] == [4.0, 3.0, 2.0, 1.0]


def test_flush_prefers_pending_values_and_includes_pending_only_windows() -> None:
    proc = WindowProcessor(TumblingWindows(10), grace_ms=1000)
    state = MemoryWindowState()
    state.windows[(10, 0, "a")] = moments_of([1.0])
    pending = {(10, 0, "a"): moments_of([1.0, 2.0]), (20, 10, "b"): moments_of([5.0])}
    flushed = proc.flush(state, pending)
    assert [(k, m.count) for k, m in flushed] == [((10, 0, "a"), 2), ((20, 10, "b"), 1)]


def test_processor_reads_state_only_for_touched_windows() -> None:
    class RecordingState(MemoryWindowState):
        def __init__(self) -> None:
            super().__init__()
            self.asked: list[list[WindowKey]] = []

        def get_many(self, keys: Sequence[WindowKey]) -> list[Moments | None]:
            self.asked.append(list(keys))
            return super().get_many(keys)

    proc = WindowProcessor(TumblingWindows(10), grace_ms=100)
    clock, state = StreamTime(100), RecordingState()
    run(proc, [ev("a", 1, 1.0), ev("a", 2, 1.0), ev("b", 15, 1.0)], clock, state)
    assert len(state.asked) == 1  # one read per batch, not one per event
    assert sorted(state.asked[0]) == [(10, 0, "a"), (20, 10, "b")]  # each window once
    run(proc, [], clock, state)
    assert len(state.asked) == 1  # an empty batch reads nothing


def test_memory_state_expiring_is_ordered_and_bounded_by_the_watermark() -> None:
    state = MemoryWindowState()
    for key in [(20, 10, "b"), (10, 0, "b"), (10, 0, "a"), (20, 15, "a"), (30, 20, "a")]:
        state.windows[key] = moments_of([1.0])
    assert [k for k, _ in state.expiring(20)] == [
        (10, 0, "a"),
        (10, 0, "b"),
        (20, 10, "b"),
        (20, 15, "a"),
    ]
    assert list(state.expiring(9)) == []


def test_memory_state_apply_stores_updated_and_drops_closed() -> None:
    state = MemoryWindowState()
    state.windows[(10, 0, "a")] = moments_of([1.0])
    result: BatchResult[object] = BatchResult(
        updated={(20, 10, "a"): moments_of([2.0])},
        closed=[((10, 0, "a"), moments_of([1.0]))],
    )
    state.apply(result)
    assert set(state.windows) == {(20, 10, "a")}


def test_window_of_and_late_by() -> None:
    assert window_of((20, 10, "k")) == Window(10, 20)
    assert LateEvent(record=None, ts=5, watermark=12).late_by_ms == 7


# ============================================================================================
# Property: any batching / interleaving == plain batch computation
# ============================================================================================

KEYS = ["a", "b", "c"]


def reference_windows(spec: WindowSpec, ts: int) -> list[Window]:
    """Windows containing ts, by plain search over aligned starts (independent of `assign`)."""
    size = spec.size_ms
    step = spec.step_ms
    return [
        Window(k * step, k * step + size)
        for k in range((ts - size) // step - 1, ts // step + 2)
        if k * step <= ts < k * step + size
    ]


@dataclass(frozen=True)
class Scenario:
    spec: WindowSpec
    grace_ms: int
    partitions: list[list[tuple[str, int, float]]]  # per partition: (key, ts, value) in order
    batches: list[list[list[int]]]  # per partition: consecutive index batches
    order: list[int]  # interleaving: partition id per batch, in feeding order
    copying_state: bool = False  # state hands out copies, as a serialized store (RocksDB) does


@dataclass
class Reference:
    aggregates: dict[tuple[int, str, Window], list[float]]
    late: dict[Record, int]  # record -> watermark when it arrived


def reference(s: Scenario) -> Reference:
    groups: dict[tuple[int, str, Window], list[float]] = defaultdict(list)
    late: dict[Record, int] = {}
    for p, events in enumerate(s.partitions):
        max_ts: int | None = None
        for i, (key, ts, value) in enumerate(events):
            max_ts = ts if max_ts is None else max(max_ts, ts)
            watermark = max_ts - s.grace_ms
            windows = reference_windows(s.spec, ts)
            if all(w.end <= watermark for w in windows):
                late[(p, i)] = watermark
                continue
            for w in windows:
                if w.end > watermark:
                    groups[(p, key, w)].append(value)
    return Reference(dict(groups), late)


specs = st.one_of(
    st.builds(TumblingWindows, st.integers(1, 40)),
    st.integers(1, 40).flatmap(
        lambda size: st.builds(HoppingWindows, st.just(size), st.integers(1, size))
    ),
)
values = st.floats(min_value=0.0, max_value=1e6, allow_nan=False, allow_infinity=False)
# one event: (key, how far the base advances, jitter around the base, value)
raw_events = st.lists(
    st.tuples(st.sampled_from(KEYS), st.integers(0, 15), st.integers(-25, 25), values),
    max_size=40,
)


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    spec = draw(specs, label="spec")
    grace = draw(st.integers(0, 40), label="grace_ms")
    n_partitions = draw(st.integers(1, 3), label="partitions")
    partitions: list[list[tuple[str, int, float]]] = []
    batches: list[list[list[int]]] = []
    for _ in range(n_partitions):
        base = draw(st.integers(-300, 300), label="start")  # negative event times too
        events: list[tuple[str, int, float]] = []
        for key, advance, jitter, value in draw(raw_events, label="events"):
            base += advance
            events.append((key, base + jitter, value))
        n = len(events)
        # repeated split points make empty batches, which must be harmless
        cuts = sorted(draw(st.lists(st.integers(0, n), max_size=8), label="split points"))
        bounds = [0, *cuts, n]
        partitions.append(events)
        batches.append([list(range(a, b)) for a, b in itertools.pairwise(bounds)])
    tags = [p for p, bs in enumerate(batches) for _ in bs]
    order = draw(st.permutations(tags), label="interleaving")
    copying = draw(st.booleans(), label="copying state")
    return Scenario(spec, grace, partitions, batches, order, copying)


class CopyingWindowState(MemoryWindowState):
    """Hands out decoded copies, like a store of bytes: catches reliance on shared objects."""

    def get_many(self, keys: Sequence[WindowKey]) -> list[Moments | None]:
        return [
            None if m is None else Moments.from_bytes(m.to_bytes()) for m in super().get_many(keys)
        ]

    def expiring(self, watermark: int) -> Iterable[tuple[WindowKey, Moments]]:
        return [(k, Moments.from_bytes(m.to_bytes())) for k, m in super().expiring(watermark)]


@dataclass
class EngineRun:
    emitted: list[tuple[int, WindowKey, Moments]]  # closed during processing, then flushed
    late: dict[Record, int]
    closed_before_flush: list[list[WindowKey]]  # per batch, as emitted


BatchCheck = Callable[
    [int, list[TimedValue[Record]], BatchResult[Record], StreamTime, MemoryWindowState], None
]


def run_engine(s: Scenario, check_batch: BatchCheck | None = None) -> EngineRun:
    processor = WindowProcessor(s.spec, s.grace_ms)
    state_type = CopyingWindowState if s.copying_state else MemoryWindowState
    states = [state_type() for _ in s.partitions]
    clocks = [StreamTime(s.grace_ms) for _ in s.partitions]
    next_batch = [0 for _ in s.partitions]
    emitted: list[tuple[int, WindowKey, Moments]] = []
    late: dict[Record, int] = {}
    closed_before_flush: list[list[WindowKey]] = []

    for p in s.order:
        indices = s.batches[p][next_batch[p]]
        next_batch[p] += 1
        batch = [
            TimedValue(key, ts, value, (p, i))
            for i in indices
            for key, ts, value in [s.partitions[p][i]]
        ]
        result = processor.process(batch, clocks[p], states[p])
        if check_batch is not None:
            check_batch(p, batch, result, clocks[p], states[p])
        states[p].apply(result)
        closed_before_flush.append([k for k, _ in result.closed])
        emitted.extend((p, k, m) for k, m in result.closed)
        for e in result.late:
            assert e.record not in late
            late[e.record] = e.watermark

    assert next_batch == [len(bs) for bs in s.batches]  # every batch fed exactly once
    for p, state in enumerate(states):
        flushed = processor.flush(state, {})
        keys = [k for k, _ in flushed]
        assert keys == sorted(keys)
        emitted.extend((p, k, m) for k, m in flushed)
    return EngineRun(emitted, late, closed_before_flush)


def assert_close(actual: float, expected: float, what: str) -> None:
    assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-6), (what, actual, expected)


@settings(max_examples=200, deadline=None)
@given(s=scenarios())
def test_any_batching_and_interleaving_equals_plain_batch_computation(s: Scenario) -> None:
    ref = reference(s)
    out = run_engine(s)

    # each window is emitted exactly once
    emitted_ids = [(p, k[2], window_of(k)) for p, k, _ in out.emitted]
    assert len(emitted_ids) == len(set(emitted_ids)), "a window was emitted twice"
    # exactly the windows of the plain computation
    assert set(emitted_ids) == set(ref.aggregates)

    for p, k, m in out.emitted:
        vals = ref.aggregates[(p, k[2], window_of(k))]
        assert m.count == len(vals)
        assert m.min == min(vals)
        assert m.max == max(vals)
        assert_close(m.total, math.fsum(vals), "sum")
        assert_close(m.mean, math.fsum(vals) / len(vals), "mean")
        assert_close(m.std, statistics.pstdev(vals), "std")
        d = m.as_dict()
        assert (d["count"], d["min"], d["max"]) == (len(vals), min(vals), max(vals))
        # bit for bit the per-event computation, whatever the batching: replay == live exactly
        assert m == moments_of(vals)

    # the late events are exactly the reference's, each with the watermark it arrived at
    assert out.late == ref.late

    # windows closed before the flush come in (end, start, key) order within each batch
    for keys in out.closed_before_flush:
        assert keys == sorted(keys)


@settings(max_examples=200, deadline=None)
@given(s=scenarios())
def test_windows_close_only_and_always_when_the_watermark_passes_their_end(s: Scenario) -> None:
    max_seen: dict[int, int] = {}

    def check(
        p: int,
        batch: list[TimedValue[Record]],
        result: BatchResult[Record],
        clock: StreamTime,
        state: MemoryWindowState,
    ) -> None:
        for e in batch:
            max_seen[p] = max(max_seen.get(p, e.ts), e.ts)
        if p not in max_seen:  # nothing seen on this partition yet: no clock, nothing happens
            assert clock.watermark is None
            assert (result.updated, result.closed, result.late) == ({}, [], [])
            return
        watermark = clock.watermark
        assert watermark == max_seen[p] - s.grace_ms
        # nothing closes before the watermark passes its end...
        assert all(k[0] <= watermark for k, _ in result.closed)
        # ...and everything still open afterwards really is open
        assert all(k[0] > watermark for k in result.updated)
        assert not set(result.updated) & {k for k, _ in result.closed}
        after = MemoryWindowState()
        after.windows = dict(state.windows)
        after.apply(result)
        assert all(k[0] > watermark for k in after.windows)

    run_engine(s, check_batch=check)


def test_reference_windows_agree_with_assign() -> None:
    # guards the reference itself: an independent search must match the definitions' assign
    for spec in [TumblingWindows(7), HoppingWindows(10, 3), HoppingWindows(6, 6)]:
        for ts in range(-50, 50):
            assert reference_windows(spec, ts) == spec.assign(ts)


def test_reference_on_a_hand_made_stream() -> None:
    # guards the reference itself on a case worked out by hand (tumbling 10 ms, grace 5 ms)
    s = Scenario(
        TumblingWindows(10),
        5,
        partitions=[
            [("a", 1, 1.0), ("a", 16, 2.0), ("b", 4, 3.0), ("a", 12, 4.0)],
            [("a", -3, 5.0)],
        ],
        batches=[[[0, 1], [2, 3]], [[0]]],
        order=[0, 1, 0],
    )
    ref = reference(s)
    assert ref.late == {(0, 2): 11}  # ts 4 after max 16: [0, 10) ended at 10 <= 11
    assert ref.aggregates == {
        (0, "a", Window(0, 10)): [1.0],
        (0, "a", Window(10, 20)): [2.0, 4.0],
        (1, "a", Window(-10, 0)): [5.0],
    }
    out = run_engine(s)
    assert [(p, k, m.total) for p, k, m in out.emitted] == [
        (0, (10, 0, "a"), 1.0),  # closed by ts 16 in the first batch
        (0, (20, 10, "a"), 6.0),  # flushed
        (1, (0, -10, "a"), 5.0),  # flushed
    ]
    assert out.late == ref.late


def test_process_columns_reports_late_events_by_index() -> None:
    processor = WindowProcessor(TumblingWindows(10), grace_ms=0)
    clock, state = StreamTime(0), MemoryWindowState()
    result = processor.process_columns(["a", "a", "b"], [25, 3, 27], [1.0, 2.0, 4.0], clock, state)
    assert [(e.record, e.ts, e.watermark) for e in result.late] == [(1, 3, 25)]
    assert result.updated == {(30, 20, "a"): moments_of([1.0]), (30, 20, "b"): moments_of([4.0])}
    assert clock.max_event_ms == 27
