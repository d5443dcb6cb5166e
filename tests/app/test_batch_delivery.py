"""Batch delivery's parts of faust's consumer (no broker): the offset gaps faust's commit
bookkeeping must be told about, and holding back a source whose pipeline takes no records."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from faust.types import TP

from app.batch_buffer import BatchBuffer
from app.batch_delivery import (
    HELD_LATELY_S,
    HOLD_AFTER_S,
    NO_PARTITION,
    SourceHold,
    offset_gaps,
    seek_back,
)
from app.settings import load_settings
from app.worker import create_app
from tests.support.fakes import ManualClock, Msg


def _at(*offsets: int) -> list[Msg]:
    return [Msg(0, o) for o in offsets]


@pytest.mark.parametrize(
    ("read_offset", "offsets", "gaps"),
    [
        (9, (10, 11, 12), []),  # read 9, then 10-12
        (9, (12, 13, 17), [(10, 12), (14, 17)]),  # 10-11 and 14-16 missing (faust's form)
        (0, (4, 5), [(1, 4)]),  # offset 0 was the last read: 1-3 missing
        # A first fetch from offset 0 or with no commit: the gaps between records still count
        # (an aborted transaction in the first fetch would otherwise stop faust's commits).
        (None, (0, 1, 5, 6, 9), [(2, 5), (7, 9)]),
        (None, (3, 4), []),
    ],
)
def test_offsets_missing_between_fetched_records_are_gaps(
    read_offset: int | None, offsets: tuple[int, ...], gaps: list[tuple[int, int]]
) -> None:
    assert offset_gaps(read_offset, _at(*offsets)) == gaps


def _consumer_of(tmp_path: Path, buffers: dict[str, BatchBuffer], assigned: set[TP]) -> Any:
    """The worker's faust consumer (not started), with `assigned` as its assignment."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    app.kappa_batch_buffers = buffers
    consumer = app.consumer
    consumer.assignment = lambda: set(assigned)
    consumer._set_active_tps(assigned)
    return consumer


def _full_buffer() -> BatchBuffer:
    buffer = BatchBuffer(1, target=1)
    buffer.partitions, buffer.size = {0: [Msg(0, 0)]}, 1
    return buffer


ORDERS = [TP("orders", p) for p in range(2)]
BY_USER = [TP("by-user", p) for p in range(2)]


def test_a_held_source_is_left_out_of_fetches_until_its_buffer_has_room(tmp_path: Path) -> None:
    buffers = {"orders": _full_buffer(), "by-user": BatchBuffer(10, 1)}
    consumer = _consumer_of(tmp_path, buffers, {*ORDERS, *BY_USER})
    changes: list[tuple[str, bool]] = []
    hold = SourceHold(consumer, buffers, lambda topic, held: changes.append((topic, held)))
    hold.hold("orders")
    assert consumer._get_active_partitions() == set(BY_USER)  # the other source goes on
    hold.release_drained()  # still full: still held
    assert consumer._get_active_partitions() == set(BY_USER)
    buffers["orders"].take()
    hold.release_drained()
    assert consumer._get_active_partitions() == {*ORDERS, *BY_USER}
    assert not hold.topics and not consumer._buffered_partitions
    assert changes == [("orders", True), ("orders", False)]  # the kappa_source_held gauge


def test_a_held_partition_revoked_or_paused_meanwhile_is_not_fetched_again(tmp_path: Path) -> None:
    buffers = {"orders": _full_buffer()}
    consumer = _consumer_of(tmp_path, buffers, set(ORDERS))
    hold = SourceHold(consumer, buffers)
    hold.hold("orders")
    consumer.pause_partitions([ORDERS[0]])  # faust, at the start of a rebalance
    consumer.assignment = lambda: {ORDERS[0]}  # ORDERS[1] revoked
    buffers["orders"].take()
    hold.release_drained()
    assert consumer._get_active_partitions() == set()  # faust resumes ORDERS[0] itself
    assert not consumer._buffered_partitions


def test_a_source_held_lately_is_held_again_without_waiting(tmp_path: Path) -> None:
    """A slow pipeline (each batch over a second) would otherwise stop the fetch loop, and the
    other pipelines' deliveries, for a second after every batch it takes."""
    buffers = {"orders": _full_buffer()}
    clock = ManualClock(100.0)
    hold = SourceHold(_consumer_of(tmp_path, buffers, set(ORDERS)), buffers, clock=clock)
    assert hold.wait_s("orders") == HOLD_AFTER_S
    hold.hold("orders")
    buffers["orders"].take()
    hold.release_drained()
    clock.now += HELD_LATELY_S - 1
    assert hold.wait_s("orders") == 0.0
    clock.now += 1
    assert hold.wait_s("orders") == HOLD_AFTER_S


def test_a_hold_faust_declines_is_not_taken_for_one(tmp_path: Path) -> None:
    """faust keeps a full buffer's partitions in its fetches while it recovers tables of its
    own: the next full buffer waits a second for room again rather than being appended to at
    once (Kappa has no faust tables, so this is a guard)."""
    buffers = {"orders": _full_buffer()}
    consumer = _consumer_of(tmp_path, buffers, set(ORDERS))
    consumer.app.in_recovery = True
    hold = SourceHold(consumer, buffers)
    hold.hold("orders")
    assert consumer._get_active_partitions() == set(ORDERS)
    assert not hold.topics and hold.wait_s("orders") == HOLD_AFTER_S


@pytest.mark.parametrize("assigned", [set(ORDERS), set()], ids=["all-held", "none-assigned"])
async def test_a_consumer_with_nothing_to_fetch_still_polls(
    tmp_path: Path, assigned: set[TP]
) -> None:
    """aiokafka leaves the group after max_poll_interval_ms outside a poll, and faust only
    sleeps when it has no partition to fetch: every source held back, or a spare worker with
    no partitions at all."""
    buffers = {"orders": _full_buffer()}
    consumer = _consumer_of(tmp_path, buffers, assigned)
    polls: list[set[TP]] = []

    async def getmany(active_partitions: set[TP], timeout: float) -> dict[TP, list[Any]]:
        polls.append(active_partitions)
        return {}

    consumer._getmany = getmany
    consumer._source_hold().hold("orders")
    assert await consumer._wait_next_records(0.05) == ({}, set())
    assert polls == [{NO_PARTITION}]


def test_assigned_partitions_count_as_started_when_a_rebalance_ends(tmp_path: Path) -> None:
    """faust's livelock check must not call a partition that could not yet take records in
    (its state opening, its first records only just written) a stream that never started."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    taken, waiting = TP("orders", 0), TP("orders.revenue-1m", 3)

    class Assigned:
        def assignment(self) -> set[TP]:
            return {taken, waiting}

    app._consumer = Assigned()
    app.on_rebalance_start()  # clears faust's inbound times
    app.monitor.stream_inbound_time[taken] = 1.0  # records taken in during the rebalance
    app.on_rebalance_end()
    inbound = app.monitor.stream_inbound_time
    assert inbound[taken] == 1.0 and inbound[waiting] > 1.0


class _Thread:
    """The consumer's thread, running what is sent to it at once; `rewind` records its calls."""

    def __init__(self) -> None:
        self.rewound: list[dict[TP, int]] = []

    async def call_thread(self, fun: Any, *args: Any) -> Any:
        return await fun(*args)

    async def rewind(self, first_offsets: dict[TP, int]) -> list[TP]:
        self.rewound.append(first_offsets)
        return list(first_offsets)


def _fetched(*tps: TP, start: int = 5, count: int = 3) -> dict[TP, list[Msg]]:
    return {tp: [Msg(tp.partition, o) for o in range(start, start + count)] for tp in tps}


async def test_records_fetched_as_the_flow_stops_are_left_and_read_again(tmp_path: Path) -> None:
    """A fetch that spans a rebalance can return records after the rebalance's seek to the
    committed offsets, before the flow resumes: they are not taken in, and the consumer goes
    back to them, or nothing would read them again (a partition's state would skip them)."""
    buffers = {"orders": BatchBuffer(100, 10)}
    consumer = _consumer_of(tmp_path, buffers, set(ORDERS))
    consumer._thread = thread = _Thread()
    consumer.stop_flow()
    left = await consumer._take_in(_fetched(*ORDERS), set(ORDERS))
    assert left == {ORDERS[0]: 5, ORDERS[1]: 5}
    assert buffers["orders"].size == 0 and consumer._read_offset[ORDERS[0]] is None
    await consumer._read_again(left)
    assert thread.rewound == [left]


async def test_records_of_a_partition_fetched_after_the_flow_stopped_are_left(
    tmp_path: Path,
) -> None:
    """The flow stops while one fetch's partitions are taken in (a buffer waiting for room
    yields): the partitions before are taken, the rest left to be read again."""
    buffer = BatchBuffer(100, 10)
    consumer = _consumer_of(tmp_path, {"orders": buffer}, set(ORDERS))
    put_many = buffer.put_many

    async def put_then_rebalance(partition: int, messages: list[Any], wait_s: Any = None) -> bool:
        room = await put_many(partition, messages, wait_s)
        consumer.stop_flow()
        return room

    buffer.put_many = put_then_rebalance  # type: ignore[method-assign]
    left = await consumer._take_in(_fetched(*ORDERS), set(ORDERS))
    assert left == {ORDERS[1]: 5}
    assert buffer.partitions == {0: _fetched(ORDERS[0])[ORDERS[0]]}
    assert consumer._read_offset[ORDERS[0]] == 7


async def test_records_of_a_partition_paused_since_the_fetch_began_are_left(
    tmp_path: Path,
) -> None:
    buffers = {"orders": BatchBuffer(100, 10)}
    consumer = _consumer_of(tmp_path, buffers, set(ORDERS))
    left = await consumer._take_in(_fetched(*ORDERS), {ORDERS[0]})  # 1 paused meanwhile
    assert left == {ORDERS[1]: 5} and set(buffers["orders"].partitions) == {0}


async def test_records_already_read_are_not_taken_in_again_nor_read_again(tmp_path: Path) -> None:
    buffers = {"orders": BatchBuffer(100, 10)}
    consumer = _consumer_of(tmp_path, buffers, set(ORDERS))
    consumer._read_offset[ORDERS[0]] = 9
    assert await consumer._take_in(_fetched(ORDERS[0]), set(ORDERS)) == {}
    assert buffers["orders"].size == 0


class _PartitionState:
    def __init__(self, position: int | None) -> None:
        self.position = position
        self.has_valid_position = position is not None


class _AiokafkaConsumer:
    """What `seek_back` reads of an aiokafka consumer: assigned partitions' positions."""

    def __init__(self, positions: dict[tuple[str, int], int | None]) -> None:
        self.states = {tp: _PartitionState(p) for tp, p in positions.items()}
        self._subscription = self
        self.sought: list[tuple[str, int, int]] = []

    def is_assigned(self, tp: Any) -> bool:
        return (tp.topic, tp.partition) in self.states

    def _assigned_state(self, tp: Any) -> _PartitionState:
        return self.states[(tp.topic, tp.partition)]

    def seek(self, tp: Any, offset: int) -> None:
        self.sought.append((tp.topic, tp.partition, offset))


def test_the_consumer_goes_back_to_records_left_but_never_forward() -> None:
    consumer = _AiokafkaConsumer(
        {("orders", 0): 8, ("orders", 1): 3, ("orders", 2): None, ("orders", 3): 5}
    )
    left = {TP("orders", p): 5 for p in range(5)}  # 4: not assigned any more
    assert seek_back(consumer, left) == [TP("orders", 0)]
    # 1: behind already (sought to its committed offset); 2: being reset; 3: at it
    assert consumer.sought == [("orders", 0, 5)]


async def test_records_of_a_partition_fetched_before_a_new_generation_are_left(
    tmp_path: Path,
) -> None:
    """A new generation began while one fetch's partitions were taken in (the flow already
    resumed): the rest are left, as the new assignment seeks them anew."""
    buffer = BatchBuffer(100, 10)
    consumer = _consumer_of(tmp_path, {"orders": buffer}, set(ORDERS))
    put_many = buffer.put_many

    async def put_then_new_generation(
        partition: int, messages: list[Any], wait_s: Any = None
    ) -> bool:
        room = await put_many(partition, messages, wait_s)
        consumer.app.consumer_generation_id += 1
        return room

    buffer.put_many = put_then_new_generation  # type: ignore[method-assign]
    left = await consumer._take_in(_fetched(*ORDERS), set(ORDERS))
    assert left == {ORDERS[1]: 5} and set(buffer.partitions) == {0}


async def test_records_whose_gap_was_noted_as_the_flow_stopped_are_left(tmp_path: Path) -> None:
    """Noting offsets missing before a fetch's records (faust's commit bookkeeping) yields: a
    rebalance may stop the flow meanwhile, and those records are then left too."""
    buffer = BatchBuffer(100, 10)
    consumer = _consumer_of(tmp_path, {"orders": buffer}, set(ORDERS))
    consumer.app.topics.acks_enabled_for = lambda topic: True
    consumer._read_offset[ORDERS[0]] = 2  # 3 and 4 missing before the fetched 5-7
    gaps: list[tuple[TP, int, int]] = []

    async def add_gap(tp: TP, start: int, end: int) -> None:
        gaps.append((tp, start, end))
        consumer.stop_flow()

    consumer._add_gap = add_gap
    left = await consumer._take_in(_fetched(ORDERS[0]), set(ORDERS))
    assert gaps == [(ORDERS[0], 3, 5)]
    assert left == {ORDERS[0]: 5} and buffer.size == 0 and consumer._read_offset[ORDERS[0]] == 2
