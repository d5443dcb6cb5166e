"""A stopped replay, without a broker: its steps (the batch under way, the held changelog
entries, the producer's close) each get their own deadline, and none waits past it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiokafka import TopicPartition

from app.settings import load_settings
from app.topology import Topology
from replay import runner as replay_runner
from replay.runner import ReplayOptions, _run_stage, replay_producer
from replay.summary import ReplaySummary

STEP_S = 0.05  # each step's deadline in these tests (`HELD_SEND_ON_STOP_S`)


@dataclass
class _Record:
    offset: int


class _StuckRunner:
    """A runner whose batch never finishes (a broker that does not answer), and whose held
    changelog entries go out at once when sent."""

    def __init__(self) -> None:
        self.pipeline = type("P", (), {"name": "orders"})()
        self.batch_started = asyncio.Event()
        self.batch_cancelled = False
        self.held_sent = False

    async def applied_offset(self, partition: int) -> int:
        return -1

    async def handle_many(self, batches: dict[int, list[_Record]]) -> Any:
        self.batch_started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.batch_cancelled = True
            raise

    async def send_held(self) -> None:
        self.held_sent = True

    def stop_sending_held(self) -> None:
        pass

    def close(self) -> None:
        pass


class _OneRecordConsumer:
    """A bounded consumer of one partition that fetches one record, at offset 0."""

    def __init__(self, topic: str) -> None:
        self.tp = TopicPartition(topic, 0)

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def assign(self, tps: list[TopicPartition]) -> None:
        pass

    def seek(self, tp: TopicPartition, offset: int) -> None:
        pass

    async def getmany(self, *tps: TopicPartition, **kwargs: Any) -> dict[Any, list[_Record]]:
        return {self.tp: [_Record(0)]}


async def test_a_stopped_stage_gives_its_held_entries_their_own_time_after_a_stuck_batch(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The batch under way runs its deadline out and is cancelled; the held entries of the
    batches before it still go out. Sharing that deadline, they got none and those batches
    were read, and their copies written, again."""
    monkeypatch.setattr("app.kafka_runner.HELD_SEND_ON_STOP_S", STEP_S)
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    topology = Topology(settings, 1).select(["orders"])
    pipeline = topology.pipelines[0]
    stuck = _StuckRunner()
    monkeypatch.setattr(replay_runner, "kafka_pipeline_runner", lambda *a, **k: stuck)
    source = topology.physical(pipeline.source)
    monkeypatch.setattr(
        replay_runner, "bounded_consumer", lambda *a, **k: _OneRecordConsumer(source)
    )
    opts = ReplayOptions(1, ["orders"], progress=False)
    stage = asyncio.ensure_future(
        _run_stage(settings, topology, pipeline, {0: 10}, [0], None, opts, ReplaySummary(1))  # type: ignore[arg-type]
    )
    await asyncio.wait_for(stuck.batch_started.wait(), 5)
    stage.cancel()  # Ctrl-C
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(stage, 5)
    assert stuck.batch_cancelled and stuck.held_sent


class _HangingProducer:
    """A producer whose stop never returns (aiokafka's, waiting for a broker that does not
    answer the requests in flight, up to its request timeout)."""

    def __init__(self) -> None:
        self.stopping = False
        self.stop_cancelled = False

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        self.stopping = True
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.stop_cancelled = True
            raise


async def test_a_stopped_replay_does_not_wait_for_its_producer_past_the_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its close is cut and said in one line; what was in flight was not acknowledged, so
    nothing was committed for it, and the resumed replay reads it again."""
    monkeypatch.setattr("app.kafka_runner.HELD_SEND_ON_STOP_S", STEP_S)
    producer = _HangingProducer()
    monkeypatch.setattr(replay_runner, "new_batch_producer", lambda *a, **k: producer)
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    staged = asyncio.Event()

    async def replay() -> None:
        async with replay_producer(settings):
            staged.set()
            await asyncio.Event().wait()  # the stages, until the stop

    task = asyncio.ensure_future(replay())
    await asyncio.wait_for(staged.wait(), 5)
    with caplog.at_level(logging.WARNING, logger="app.kafka_runner"):
        task.cancel()  # Ctrl-C
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)  # without the deadline: never
    assert producer.stopping and producer.stop_cancelled
    assert [r.getMessage() for r in caplog.records] == [
        "closing the replay's producer did not end within 0.05s of the stop; cancelled"
    ]


async def test_a_replay_ending_without_a_stop_names_no_stop_when_its_close_is_cut(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """At its normal end every batch was acknowledged: the close has nothing left to deliver,
    and one a broker gone quiet holds up is cut all the same, said without a stop there was
    not."""
    monkeypatch.setattr("app.kafka_runner.HELD_SEND_ON_STOP_S", STEP_S)
    producer = _HangingProducer()
    monkeypatch.setattr(replay_runner, "new_batch_producer", lambda *a, **k: producer)
    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    with caplog.at_level(logging.WARNING, logger="app.kafka_runner"):
        async with replay_producer(settings):
            pass  # the stages, to their end
    assert producer.stopping and producer.stop_cancelled
    assert [r.getMessage() for r in caplog.records] == [
        "closing the replay's producer did not end within 0.05s; cancelled"
    ]
