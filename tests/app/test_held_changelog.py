"""PipelineRunner with `hold_changelog`: each batch's changelog entries go out with the next
batch's outputs, and local state never gets ahead of the changelog. No broker: a recording
sender and a list-backed changelog stand in."""

from __future__ import annotations

import asyncio
import json
import random
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from agents.base import SourceRecord
from app.runtime import PipelineRunner, Produce, SourceCommit
from app.settings import load_settings
from app.topology import Topology
from tables.partition_state import APPLIED_OFFSET
from tests.support.fakes import ListChangelog
from tests.support.state import state_contents

REVENUE = "orders.revenue-1m"


def _orders(n: int, partition: int = 0) -> list[SourceRecord]:
    """Orders over 12 products, 7 s apart: windows (60 s) close as the stream goes on."""
    out = []
    for i in range(n):
        pid = f"p{i % 12}"
        value = {
            "order_id": str(i),
            "user_id": f"u{i % 5}",
            "product_id": pid,
            "category": "c",
            "amount": 1.25 + i % 3,
            "quantity": 1 + i % 2,
            "ts": 1_700_000_000_000 + i * 7_000,
        }
        out.append(
            SourceRecord("orders", partition, i, None, pid.encode(), json.dumps(value).encode())
        )
    return out


class _Broker:
    """What a broker would keep: every record sent, per topic, in send order."""

    def __init__(self) -> None:
        self.sends: list[list[Produce]] = []

    async def send(self, records: list[Produce], commit: SourceCommit) -> None:
        self.sends.append(list(records))

    def changelog(self) -> list[tuple[bytes, bytes | None]]:
        return [(r.key or b"", r.value) for recs in self.sends for r in recs if r.atomic]

    def outputs(self, topic: str) -> set[tuple[bytes | None, bytes | None]]:
        return {(r.key, r.value) for recs in self.sends for r in recs if r.topic == topic}


def _changelog(broker: _Broker) -> ListChangelog:
    """A changelog source over what `_Broker` received."""
    return ListChangelog(broker.changelog)


def _stored_offset(runner: PipelineRunner, partition: int = 0) -> int:
    raw = runner._states[partition].store.get_many([APPLIED_OFFSET])[0]
    return struct.unpack(">q", raw)[0] if raw is not None else -1


def _topology(tmp_path: Path, name: str) -> Topology:
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path / name)})
    return Topology(settings, 1).select(["orders"])


def _holding_runner(
    tmp_path: Path, send: Callable[[list[Produce], SourceCommit], Awaitable[None]]
) -> PipelineRunner:
    """A runner as the at-least-once worker has it: one request per cycle, changelogs held."""
    topology = _topology(tmp_path, "state")
    return PipelineRunner(
        topology.pipelines[0], topology, send, one_request=True, hold_changelog=True
    )


async def test_a_batchs_changelog_goes_out_with_the_next_batchs_outputs(tmp_path: Path) -> None:
    broker = _Broker()
    runner = _holding_runner(tmp_path, broker.send)
    records = _orders(30)
    for batch in (records[:10], records[10:20], records[20:]):
        await runner.handle_many({0: batch})
    assert len(broker.sends) == 3  # one request per batch
    for i, recs in enumerate(broker.sends):
        assert not any(r.after_outputs for r in recs)  # nothing waits for the outputs
        markers = [r.value for r in recs if r.key == APPLIED_OFFSET]
        assert markers == ([] if i == 0 else [struct.pack(">q", 10 * i - 1)])  # the previous
    # The last batch is held: read by the pipeline, not yet in the store.
    assert await runner.applied_offset(0) == 29 and _stored_offset(runner) == 19
    await runner.send_held()
    assert [r.value for r in broker.sends[-1] if r.key == APPLIED_OFFSET] == [struct.pack(">q", 29)]
    assert _stored_offset(runner) == 29
    runner.close()


async def test_a_flush_sends_the_held_batch_and_its_own_entries_after_its_outputs(
    tmp_path: Path,
) -> None:
    broker = _Broker()
    runner = _holding_runner(tmp_path, broker.send)
    await runner.handle_many({0: _orders(20)})
    await runner.flush(0)
    held, own = [], []
    for r in broker.sends[-1]:
        if r.atomic:
            (own if r.after_outputs else held).append(r)
    assert held[-1].key == own[-1].key == APPLIED_OFFSET
    assert _stored_offset(runner) == 19
    runner.close()


@pytest.mark.parametrize("seed", range(6))
async def test_crashes_with_a_held_batch_give_the_same_state_and_windows(
    tmp_path: Path, seed: int
) -> None:
    """A crash loses the held batch; the restart reads it again from the source (the consumer
    already acknowledged it) and ends where a run without a crash ends."""
    rng = random.Random(seed)
    records = _orders(200)
    cuts = sorted(rng.sample(range(1, 200), 14))
    batches = [records[a:b] for a, b in zip([0, *cuts], [*cuts, 200])]

    async def read_gap(partition: int, start: int, end: int) -> AsyncIterator[list[SourceRecord]]:
        yield records[start:end]

    plain_topology = _topology(tmp_path, "plain")
    plain = _Broker()
    runner = PipelineRunner(plain_topology.pipelines[0], plain_topology, plain.send)
    for batch in batches:
        await runner.handle(0, batch)
    await runner.flush(0)
    expected = state_contents(runner._states[0].store)
    runner.close()

    topology = _topology(tmp_path, "held")
    broker = _Broker()

    def start() -> PipelineRunner:
        return PipelineRunner(
            topology.pipelines[0],
            topology,
            broker.send,
            read_gap,
            _changelog(broker),
            one_request=True,
            hold_changelog=True,
        )

    runner = start()
    crashes = 0
    for batch in batches:
        await runner.handle_many({0: batch})
        assert _stored_offset(runner) < batch[-1].offset  # held: local state trails
        # Killed: what is held is gone, the consumer acknowledged it all (its next batch
        # starts after it, so the held records are read as a gap; there is a next batch).
        if batch is not batches[-1] and rng.random() < 0.4:
            runner.close()
            runner = start()
            crashes += 1
    await runner.flush(0)
    await runner.send_held()
    assert crashes
    assert state_contents(runner._states[0].store) == expected
    assert broker.outputs(topology.physical(REVENUE)) == plain.outputs(
        plain_topology.physical(REVENUE)
    )
    runner.close()
    # And the changelog alone restores the same state.
    restored_topology = _topology(tmp_path, "restored")
    restored = PipelineRunner(
        restored_topology.pipelines[0],
        restored_topology,
        broker.send,
        changelog_source=_changelog(broker),
    )
    assert state_contents((await restored.state(0)).store) == expected
    restored.close()


async def test_a_held_batch_is_never_in_two_requests_at_once(tmp_path: Path) -> None:
    """An idle-time send of the held entries and the next batch do not both carry them: a
    retried copy could otherwise land after the next batch's entries."""
    broker = _Broker()
    release = asyncio.Event()

    async def slow_send(records: list[Produce], commit: SourceCommit) -> None:
        await release.wait()
        await broker.send(records, commit)

    runner = _holding_runner(tmp_path, slow_send)
    release.set()
    records = _orders(20)
    await runner.handle_many({0: records[:10]})
    release.clear()
    runner.send_held_soon()  # in flight, unacknowledged
    await asyncio.sleep(0)
    step = asyncio.ensure_future(runner.handle_many({0: records[10:]}))
    await asyncio.sleep(0)
    assert not step.done()
    release.set()
    await step
    held_in = [
        i for i, recs in enumerate(broker.sends) if any(r.key == APPLIED_OFFSET for r in recs)
    ]
    assert held_in == [1]  # the idle-time send only; the next batch's request has none
    assert _stored_offset(runner) == 9
    runner.close()


async def test_a_batch_cancelled_while_waiting_for_its_partition_leaves_nothing_staged(
    tmp_path: Path,
) -> None:
    """E.g. a sibling partition's batch failed and `run_concurrently` cancelled this one while
    an idle-time send held its partition: a retry must not apply the batch twice."""
    records = _orders(30)
    reference = _topology(tmp_path, "reference")
    plain = PipelineRunner(reference.pipelines[0], reference, _Broker().send)
    await plain.handle(0, records)
    expected = state_contents(plain._states[0].store)
    plain.close()

    broker = _Broker()
    release = asyncio.Event()
    release.set()

    async def gated_send(records: list[Produce], commit: SourceCommit) -> None:
        await release.wait()
        await broker.send(records, commit)

    runner = _holding_runner(tmp_path, gated_send)
    await runner.handle_many({0: records[:10]})
    release.clear()
    runner.send_held_soon()  # holds partition 0 until released
    await asyncio.sleep(0)
    step = asyncio.ensure_future(runner.handle(0, records[10:20]))
    await asyncio.sleep(0)
    step.cancel()
    with pytest.raises(asyncio.CancelledError):
        await step
    assert not runner._states[0]._staged
    release.set()
    await runner.handle_many({0: records[10:]})  # the retry
    await runner.send_held()
    assert state_contents(runner._states[0].store) == expected
    runner.close()


def _poisoned(topology: Topology, offsets: set[int]) -> None:
    """Make the orders pipeline raise (a bug) on the records at `offsets`."""
    pipeline = topology.pipelines[0]
    process = pipeline.process

    def process_or_raise(state, records):  # type: ignore[no-untyped-def]
        out = process(state, records)
        if any(r.offset in offsets for r in records):
            raise RuntimeError("a bug")
        return out

    pipeline.process = process_or_raise  # type: ignore[method-assign]


async def _until_sent(attempt: Callable[[], Awaitable[object]]) -> None:
    """Retry on broker trouble, as the worker's `process_with_retry` does."""
    while True:
        try:
            await attempt()
            return
        except ConnectionError:
            continue


async def _run_with_flaky_sends(
    topology: Topology, steps: list[dict[int, list[SourceRecord]]], hold: bool, seed: int
) -> tuple[object, ...]:
    """Run `steps` (each several partitions' batches); a third of the sends fail, after
    landing or not, and are retried as the worker does."""
    rng = random.Random(seed)
    broker = _Broker()

    async def flaky_send(records: list[Produce], commit: SourceCommit) -> None:
        if rng.random() < 0.5:
            await broker.send(records, commit)
            if rng.random() < 0.3:
                raise ConnectionError("acknowledgement lost")
        elif rng.random() < 0.3:
            raise ConnectionError("broker gone")
        else:
            await broker.send(records, commit)

    runner = PipelineRunner(
        topology.pipelines[0], topology, flaky_send, one_request=True, hold_changelog=hold
    )
    for step in steps:
        await _until_sent(lambda step=step: runner.handle_many(step))
    await _until_sent(runner.send_held)
    result = (
        [state_contents(runner._states[p].store) for p in sorted(runner._states)],
        broker.outputs(topology.physical(REVENUE)),
        broker.outputs(topology.physical("orders.dlq")),
    )
    runner.close()
    return result


@pytest.mark.parametrize("seed", range(4))
async def test_failed_sends_and_poisoned_records_over_partitions_end_as_without_holding(
    tmp_path: Path, seed: int
) -> None:
    """Several partitions per request, sends that fail (some after landing) and are retried,
    and records isolated to the DLQ: holding changes none of the results."""
    rng = random.Random(seed)
    records = {p: _orders(60, p) for p in range(3)}
    cuts = sorted(rng.sample(range(1, 60), 5))
    steps = [{p: records[p][a:b] for p in range(3)} for a, b in zip([0, *cuts], [*cuts, 60])]
    results = {}
    for hold in (False, True):
        topology = _topology(tmp_path, f"hold-{hold}")
        _poisoned(topology, {7, 31})
        results[hold] = await _run_with_flaky_sends(topology, steps, hold, seed)
    assert results[False][2]  # the poisoned records went to the DLQ
    assert results[True] == results[False]


async def test_sending_the_held_entries_of_some_partitions_leaves_the_others_held(
    tmp_path: Path,
) -> None:
    """On a revoke only the revoked partitions' held batches go out (and are committed)."""
    broker = _Broker()
    runner = _holding_runner(tmp_path, broker.send)
    await runner.handle_many({0: _orders(10, 0), 1: _orders(10, 1)})
    await runner.send_held([1])
    assert {r.partition for r in broker.sends[-1]} == {1}
    assert (_stored_offset(runner, 0), _stored_offset(runner, 1)) == (-1, 9)
    assert runner._states[0].held()
    runner.close()


async def test_a_partition_handed_over_leaves_its_held_batch_in_the_changelog(
    tmp_path: Path,
) -> None:
    """On a revoke the held batch's entries go out before the partition is let go, so the
    worker taking it over restores everything and reads no batch again."""
    broker = _Broker()
    runner = _holding_runner(tmp_path, broker.send)
    records = _orders(20)
    await runner.handle_many({0: records[:10]})
    await runner.handle_many({0: records[10:]})
    await runner.hand_over([0])
    assert runner.open_state(0) is None
    assert await _changelog(broker).last_applied(0) == 19
    topology = _topology(tmp_path, "next-owner")
    next_owner = PipelineRunner(
        topology.pipelines[0], topology, broker.send, changelog_source=_changelog(broker)
    )
    assert await next_owner.applied_offset(0) == 19
    next_owner.close()
    runner.close()


async def test_a_hand_over_waits_for_a_background_send_and_its_deadline_cancels_it(
    tmp_path: Path,
) -> None:
    """A batch dropped for a waiting revoke closes its partition; the idle-time send of the
    held entries could still be retrying, and landed after the next owner's entries."""
    broker = _Broker()
    stuck = asyncio.Event()
    sends = 0

    async def send(records: list[Produce], commit: SourceCommit) -> None:
        nonlocal sends
        sends += 1
        if sends > 1:  # the broker stops answering after the first batch
            stuck.set()
            await asyncio.Event().wait()
        await broker.send(records, commit)

    runner = _holding_runner(tmp_path, send)
    await runner.handle_many({0: _orders(10)})  # acknowledged; its entries are held
    runner.send_held_soon()  # idle: their own send, in the background
    background = runner._sending_held
    assert background is not None
    await asyncio.wait_for(stuck.wait(), 5)  # ... retried against a broker that does not answer
    runner.close_partition(0)  # a batch left for a waiting revoke
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(runner.hand_over({0}), 0.2)  # the revoke's deadline
    # Without the wait, the hand-over returned at once and left the send going on.
    assert background.cancelled()  # it can send nothing after the partition was let go
    assert len(broker.sends) == 1
    runner.close()
