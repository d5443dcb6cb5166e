"""A static member the group coordinator fences (FENCED_INSTANCE_ID, 82) stops, and sends no
group request after that answer (no broker: the consumer's client is a stand-in)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import pytest
from aiokafka.protocol.commit import OffsetCommitRequest, OffsetCommitResponse_v3
from aiokafka.protocol.group import (
    HeartbeatRequest,
    HeartbeatRequest_v1,
    HeartbeatResponse_v1,
    JoinGroupRequest,
    JoinGroupResponse_v5,
    SyncGroupRequest,
    SyncGroupResponse_v3,
)
from aiokafka.protocol.metadata import MetadataRequest

from app.group_fence import (
    COORDINATOR_LOG,
    FENCED_INSTANCE_ID,
    GroupFence,
    HeartbeatRequest_v3,
    InstanceFenced,
    StaticHeartbeatRequest,
    fenced_line,
    stop_when_fenced,
)
from app.runtime import SenderClosed, SourceCommit
from app.settings import load_settings
from app.worker import create_app
from tests.support.fakes import until
from tests.support.group_fakes import ClosingCoordinator, ScriptedClient

GROUP, ME, INSTANCE = "kappa-v1", "faust-me", "worker-0"


pytestmark = pytest.mark.usefixtures("coordinator_log_as_it_was")


def test_the_line_names_the_group_and_the_id_and_what_to_do() -> None:
    assert fenced_line(GROUP, INSTANCE) == (
        "another process joined consumer group kappa-v1 with KAPPA_GROUP_INSTANCE_ID=worker-0, "
        "so the broker fenced this one (FENCED_INSTANCE_ID): give each worker process its own "
        "id; stopping"
    )


def test_only_fenced_instance_id_fences_and_only_the_first_one_says_so() -> None:
    fence = GroupFence(GROUP, INSTANCE)
    for other in (0, 25, 27, 22, -1):  # none, unknown member, rebalancing, generation, unknown
        assert not fence.answered(other)
    assert not fence.fenced
    assert fence.answered(FENCED_INSTANCE_ID)
    assert fence.fenced
    assert not fence.answered(FENCED_INSTANCE_ID)  # said once
    assert fence.line() == fenced_line(GROUP, INSTANCE)


def test_a_static_members_heartbeat_names_its_id_where_the_broker_takes_version_3() -> None:
    beat = StaticHeartbeatRequest(HeartbeatRequest(GROUP, 4, ME), INSTANCE)
    v3 = beat.prepare({12: (0, 4)})
    assert isinstance(v3, HeartbeatRequest_v3)
    # Kafka's HeartbeatRequest v3: group, generation, member id, group instance id
    assert v3.encode() == (
        b"\x00\x08kappa-v1" + b"\x00\x00\x00\x04" + b"\x00\x08faust-me" + b"\x00\x08worker-0"
    )
    assert isinstance(beat.prepare({12: (0, 2)}), HeartbeatRequest_v1)  # an older broker


class _Consumer:
    def __init__(self, client: ScriptedClient) -> None:
        self._client = client
        self._coordinator = ClosingCoordinator(GROUP, ME)

    async def commit(self, offsets: object) -> None:
        await self._client.send(1, _commit())


async def _until_fenced(fence: GroupFence) -> None:
    """A fenced send goes on to wait for the consumer's close in the same step."""
    await until(lambda: fence.fenced, "fenced")


def _join() -> JoinGroupRequest:
    return JoinGroupRequest(GROUP, 10_000, 10_000, ME, INSTANCE, "consumer", [])


def _sync() -> SyncGroupRequest:
    return SyncGroupRequest(GROUP, 3, ME, INSTANCE, [])


def _commit() -> OffsetCommitRequest:
    return OffsetCommitRequest(GROUP, 3, ME, -1, [("orders", [(0, 10, "")])])


def _watched(answers: list[Any]) -> tuple[_Consumer, GroupFence, list[str]]:
    consumer = _Consumer(ScriptedClient(answers))
    fence = GroupFence(GROUP, INSTANCE)
    said: list[str] = []
    stop_when_fenced(consumer, fence, lambda: said.append(fence.line()))
    return consumer, fence, said


async def test_answers_other_than_fenced_pass_as_they_were() -> None:
    join = JoinGroupResponse_v5(0, 0, 3, "sticky", ME, ME, [])
    beat = HeartbeatResponse_v1(0, 27)
    consumer, fence, said = _watched([join, beat])
    assert await consumer._client.send(1, _join()) is join
    assert await consumer._client.send(1, HeartbeatRequest(GROUP, 3, ME)) is beat
    assert isinstance(consumer._client.sent[1], StaticHeartbeatRequest)
    assert not fence.fenced and said == []


@pytest.mark.parametrize(
    "request_, answer",
    [
        (HeartbeatRequest(GROUP, 3, ME), HeartbeatResponse_v1(0, FENCED_INSTANCE_ID)),
        (_join(), JoinGroupResponse_v5(0, FENCED_INSTANCE_ID, -1, "", "", ME, [])),
        (_sync(), SyncGroupResponse_v3(0, FENCED_INSTANCE_ID, b"")),
    ],
    ids=["heartbeat", "join", "sync"],
)
async def test_a_fenced_answer_stops_the_worker_and_no_member_request_is_sent_after_it(
    request_: Any, answer: Any
) -> None:
    metadata = object()
    consumer, fence, said = _watched([answer, metadata])
    client = consumer._client
    fenced = asyncio.ensure_future(client.send(1, request_))
    beat = asyncio.ensure_future(client.send(1, HeartbeatRequest(GROUP, 3, ME)))
    join = asyncio.ensure_future(client.send(1, _join()))
    await _until_fenced(fence)  # the others then run up to where they wait
    assert said == [fenced_line(GROUP, INSTANCE)] and fence.fenced
    with pytest.raises(InstanceFenced):  # an offset commit is refused at once
        await client.send(1, _commit())
    assert await client.send(1, MetadataRequest([])) is metadata  # not a member's request
    assert not (fenced.done() or beat.done() or join.done())  # held until the consumer closes
    consumer._coordinator._closing.set_result(None)
    for refused in (fenced, beat, join):
        with pytest.raises(InstanceFenced):
            await refused
    assert len(client.sent) == 2  # the fenced request and the metadata request
    assert said == [fenced_line(GROUP, INSTANCE)]  # said once


def _committed(*errors: int) -> OffsetCommitResponse_v3:
    return OffsetCommitResponse_v3(0, [("orders", [(p, e) for p, e in enumerate(errors)])])


@pytest.mark.parametrize("error", [25, 22], ids=["unknown member", "illegal generation"])
async def test_a_commit_refused_as_another_members_is_checked_with_a_heartbeat_naming_the_id(
    error: int,
) -> None:
    """Apache Kafka answers a replaced static member's commit (which does not name the id)
    UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION: aiokafka would join again with the id, taking it
    back and fencing the newer process. A heartbeat naming the id says which it is."""
    fenced = HeartbeatResponse_v1(0, FENCED_INSTANCE_ID)
    consumer, fence, said = _watched([_committed(0, error), fenced])
    client = consumer._client
    with pytest.raises(InstanceFenced):  # so aiokafka does not join again
        await client.send(1, _commit())
    probe = client.sent[1]
    assert isinstance(probe, StaticHeartbeatRequest)
    assert isinstance(probe.prepare({12: (0, 4)}), HeartbeatRequest_v3)
    assert (probe.beat._group, probe.beat._generation_id, probe.beat._member_id) == (GROUP, 3, ME)
    assert said == [fenced_line(GROUP, INSTANCE)] and fence.fenced
    join = asyncio.ensure_future(client.send(1, _join()))
    consumer._coordinator._closing.set_result(None)
    with pytest.raises(InstanceFenced):
        await join
    assert len(client.sent) == 2  # the commit and the heartbeat


@pytest.mark.parametrize(
    "answer, probed",
    [
        (_committed(0, 25), HeartbeatResponse_v1(0, 25)),  # not replaced: a member gone
        (_committed(0, 27), None),  # rebalancing: no probe
        (_committed(0, 0), None),
    ],
    ids=["unknown member, not fenced", "rebalancing", "committed"],
)
async def test_a_commit_answered_otherwise_passes_as_it_was(answer: Any, probed: Any) -> None:
    consumer, fence, said = _watched([answer] + ([probed] if probed is not None else []))
    assert await consumer._client.send(1, _commit()) is answer
    assert len(consumer._client.sent) == (2 if probed is not None else 1)
    assert not fence.fenced and said == []


async def test_a_commit_under_way_when_fenced_returns_uncommitted_instead_of_failing() -> None:
    """faust crashes its consumer thread on a commit that fails (a traceback, a second ERROR
    line): one begun before the fence and sent after it is refused, unsent, and returns."""
    consumer, fence, _ = _watched([])
    fence.answered(FENCED_INSTANCE_ID)
    await consumer.commit({})
    assert consumer._client.sent == []


class _HeldClient(ScriptedClient):
    """A client whose first answer arrives only once `gate` is set."""

    def __init__(self, answers: list[Any]) -> None:
        super().__init__(answers)
        self.gate = asyncio.Event()

    async def send(self, node_id: int, request: Any, **kwargs: Any) -> Any:
        first = not self.sent
        answer = await super().send(node_id, request, **kwargs)
        if first:
            await self.gate.wait()
        return answer


async def test_a_heartbeat_answered_fenced_after_another_fenced_it_is_refused_too() -> None:
    """Two heartbeats on their way when the broker fenced the member (a commit's check and
    aiokafka's own): the second answer found the fence already set and went back to aiokafka,
    whose heartbeat task then failed on an error code it does not know, and a second ERROR line
    ("Future exception was never retrieved") followed the one that says why the worker stops."""
    fenced_beat = HeartbeatResponse_v1(0, FENCED_INSTANCE_ID)
    client = _HeldClient([fenced_beat, fenced_beat])
    consumer = _Consumer(client)
    fence = GroupFence(GROUP, INSTANCE)
    said: list[str] = []
    stop_when_fenced(consumer, fence, lambda: said.append(fence.line()))
    early = asyncio.ensure_future(client.send(1, HeartbeatRequest(GROUP, 3, ME)))
    await until(lambda: bool(client.sent), "sent")  # its answer is held
    late = asyncio.ensure_future(client.send(1, HeartbeatRequest(GROUP, 3, ME)))
    await _until_fenced(fence)  # by the later one's answer
    client.gate.set()  # the earlier one's answer, fenced too, arrives after the fence
    consumer._coordinator._closing.set_result(None)
    for beat in (early, late):
        with pytest.raises(InstanceFenced):
            await beat
    assert said == [fenced_line(GROUP, INSTANCE)]


async def test_a_heartbeat_held_when_fenced_is_cancelled_with_the_consumer_left_open() -> None:
    """aiokafka's close cancels its heartbeat task: that must not cancel its close itself."""
    consumer, fence, _ = _watched([HeartbeatResponse_v1(0, FENCED_INSTANCE_ID)])
    beat = asyncio.ensure_future(consumer._client.send(1, HeartbeatRequest(GROUP, 3, ME)))
    await _until_fenced(fence)  # the beat now waits for the consumer to close
    beat.cancel()
    with pytest.raises(asyncio.CancelledError):
        await beat
    assert not consumer._coordinator._closing.cancelled()


async def test_the_coordinators_warnings_are_not_logged_once_fenced(
    caplog: pytest.LogCaptureFixture,
) -> None:
    consumer, fence, _ = _watched([HeartbeatResponse_v1(0, FENCED_INSTANCE_ID)])
    with caplog.at_level(logging.INFO, logger=COORDINATOR_LOG.name):
        COORDINATOR_LOG.warning("Marking the coordinator dead before")
        beat = asyncio.ensure_future(consumer._client.send(1, HeartbeatRequest(GROUP, 3, ME)))
        await _until_fenced(fence)
        COORDINATOR_LOG.error("Error sending JoinGroupRequest_v5 to node 1 [InstanceFenced]")
        COORDINATOR_LOG.warning("Marking the coordinator dead (node 1) for group %s.", GROUP)
        COORDINATOR_LOG.info("LeaveGroup request succeeded")
    assert [r.getMessage() for r in caplog.records] == [
        "Marking the coordinator dead before",
        "LeaveGroup request succeeded",
    ]
    beat.cancel()


async def test_a_fenced_worker_commits_nothing_more(tmp_path: Path) -> None:
    env = {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_GROUP_INSTANCE_ID": INSTANCE}
    app = create_app(load_settings(env), 1)
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    try:
        fence = app.kappa_group_fence
        assert fence is not None and fence.instance_id == INSTANCE
        fence.answered(FENCED_INSTANCE_ID)
        # faust's commit would need the started consumer (and crash on the broker's refusal)
        assert await thread._commit({}) is False
    finally:
        await consumer.stop()


async def test_a_dynamic_member_has_no_fence(tmp_path: Path) -> None:
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert app.kappa_group_fence is None
    finally:
        await consumer.stop()


async def test_the_fenced_stop_closes_the_senders_before_it_stops_the_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The drain loop keeps processing batches until the stop ends it: the senders must be
    closed before the stop begins, not at its end."""
    calls: list[Any] = []
    monkeypatch.setattr(
        "app.batch_delivery.stop_when_fenced", lambda _c, _f, on_fenced: calls.append(on_fenced)
    )
    env = {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_GROUP_INSTANCE_ID": INSTANCE}
    app = create_app(load_settings(env), 1)
    done: list[str] = []
    stopped = asyncio.Event()

    async def close() -> None:
        done.append("senders closed")

    async def stop(reason: BaseException, line: str) -> None:
        done.append(line)
        stopped.set()

    app.kappa_on_fenced, app.kappa_stop_on_error = close, stop
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        (on_fenced,) = calls
        await asyncio.get_running_loop().run_in_executor(None, on_fenced)  # the consumer's thread
        await stopped.wait()
        assert done == ["senders closed", fenced_line(app.conf.id, INSTANCE)]
    finally:
        await consumer.stop()


@pytest.mark.parametrize("fenced", [True, False], ids=["fenced", "not fenced"])
async def test_a_fenced_worker_sends_nothing_more_and_nothing_held_on_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fenced: bool
) -> None:
    """Its partitions' changelogs are the other process's, which restores from them: an older
    entry of this one landing after the other's would win there."""
    held_sent: list[object] = []

    async def send_held_on_stop(runners: object, deadline: object) -> None:
        held_sent.append(runners)

    monkeypatch.setattr("app.worker.send_held_on_stop", send_held_on_stop)
    env = {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_GROUP_INSTANCE_ID": INSTANCE}
    app = create_app(load_settings(env), 1)
    if fenced:
        assert app.kappa_on_fenced is not None
        await app.kappa_on_fenced()
        for runner in app.kappa_runners:  # a batch now, or one being retried, fails at once
            with pytest.raises(SenderClosed):
                await runner.send([], SourceCommit("orders", 0, 1, app.conf.id))
    await app.on_before_shutdown.send()
    assert held_sent == ([] if fenced else [app.kappa_runners])
