"""A worker the group coordinator refuses for a reason retrying cannot change stops in one
line naming what to change, and sends no lookup, join, sync or heartbeat after that answer
(no broker: the consumer's client is a stand-in)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import UnknownMemberIdError, for_code
from aiokafka.protocol.commit import OffsetCommitRequest, OffsetCommitResponse_v2
from aiokafka.protocol.coordination import FindCoordinatorRequest, FindCoordinatorResponse_v1
from aiokafka.protocol.group import (
    HeartbeatRequest,
    HeartbeatResponse_v1,
    JoinGroupRequest,
    JoinGroupResponse_v5,
    SyncGroupRequest,
    SyncGroupResponse_v3,
)
from aiokafka.protocol.metadata import MetadataRequest
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

from app.group_fence import COORDINATOR_LOG
from app.group_leave import _leave_group
from app.group_refusal import (
    REFUSALS,
    GroupRefusal,
    GroupRefused,
    commit_refusal_line,
    quiet_commit_refusals,
    refusal_line,
    stop_when_refused,
)
from app.settings import load_settings
from app.worker import create_app
from tests.support.fakes import until
from tests.support.group_fakes import ClosingCoordinator, ScriptedClient

GROUP, ME = "kappa-v1", "faust-me"


pytestmark = pytest.mark.usefixtures("coordinator_log_as_it_was")


def test_a_session_timeout_out_of_the_brokers_bounds_names_the_setting_and_the_bounds() -> None:
    assert refusal_line(26, "JoinGroup", GROUP, 3000) == (
        "the broker refuses KAPPA_SESSION_TIMEOUT_MS=3000 for consumer group kappa-v1 (JoinGroup "
        "answered INVALID_SESSION_TIMEOUT, not retried): set KAPPA_SESSION_TIMEOUT_MS within the "
        "broker's group.min.session.timeout.ms and group.max.session.timeout.ms (6000 to 1800000 "
        "by default); stopping"
    )


@pytest.mark.parametrize(
    "code, says",
    [
        (30, "grant the principal Read on the group (ACLs)"),
        (24, "set another KAPPA_APP_ID"),
        (23, "workers of a Kappa before 2026-11-22 assign round-robin"),
        (81, "run fewer worker processes of this version, or raise group.max.size"),
    ],
    ids=["authorization", "group id", "assignors", "group size"],
)
def test_each_refusal_names_the_group_the_answer_and_what_to_change(code: int, says: str) -> None:
    line = refusal_line(code, "SyncGroup", GROUP, 10_000)
    assert line is not None
    assert "consumer group kappa-v1" in line or "kappa-v1 as a consumer group id" in line, line
    assert f"(SyncGroup answered {REFUSALS[code][0]}, not retried): " in line, line
    assert says in line and line.endswith("; stopping"), line


@pytest.mark.parametrize(
    "request_name, code",
    [
        *(("JoinGroup", c) for c in (0, 14, 15, 16, 25, 27, 79, 82)),
        *(("SyncGroup", c) for c in (0, 15, 16, 22, 25, 27, 82)),
        *(("Heartbeat", c) for c in (0, 15, 16, 22, 25, 27, 82)),
        *(("FindCoordinator", c) for c in (0, 7, 15)),
    ],
)
def test_answers_aiokafka_handles_are_no_refusal(request_name: str, code: int) -> None:
    """None, coordinator loading or moved, generation or member unknown, rebalancing, member
    id required, fenced (`app.group_fence` stops on that); a lookup's retriable errors
    (REQUEST_TIMED_OUT), which aiokafka retries; a join's REBALANCE_IN_PROGRESS, retried."""
    assert refusal_line(code, request_name, GROUP, 10_000) is None


@pytest.mark.parametrize(
    "request_name, code",
    [("JoinGroup", 22), ("JoinGroup", 7), ("SyncGroup", 14), ("Heartbeat", 14), ("Heartbeat", 7)],
)
def test_an_answer_aiokafka_does_not_handle_there_stops_even_if_retriable(
    request_name: str, code: int
) -> None:
    """aiokafka retries none of these there (it left them for a fetch faust does not make),
    retriable or not; nor does Kafka's own consumer (KafkaException)."""
    line = refusal_line(code, request_name, GROUP, 10_000)
    assert line is not None and line.startswith(f"the broker answered {request_name} "), line


def test_an_answer_aiokafka_neither_expects_nor_retries_stops_naming_request_and_error() -> None:
    """aiokafka left a join answered so for a fetch faust does not make (the worker out of its
    group for ever), and crashed faust's fetcher with a heartbeat's traceback."""
    assert refusal_line(42, "JoinGroup", GROUP, 10_000) == (
        "the broker answered JoinGroup for consumer group kappa-v1 with INVALID_REQUEST (42), "
        "which neither aiokafka nor Kafka's own consumer retries there: the broker's log may say "
        "why; stopping"
    )


async def test_a_join_answered_rebalance_in_progress_goes_to_aiokafka_as_one_it_retries() -> None:
    """Kafka answers a JoinGroup so when writing the group's state timed out; the Java consumer
    retries it. aiokafka left it for a fetch faust does not make: the worker joined no more."""
    consumer, refusal, said = _watched([JoinGroupResponse_v5(0, 27, -1, "", "", "", [])])
    answer = await _settled(consumer._client.send(1, _join()))
    assert answer.error_code == 14  # COORDINATOR_LOAD_IN_PROGRESS: after the backoff, again
    assert not refusal.refused and said == []


@pytest.mark.parametrize(
    "code, said",
    [(-1, "UNKNOWN_SERVER_ERROR (-1)"), (35, "UNSUPPORTED_VERSION (35)"), (113, "error 113")],
    ids=["unknown server error", "unsupported version", "a code aiokafka does not know"],
)
def test_an_unexpected_answer_is_named_as_kafka_names_it(code: int, said: str) -> None:
    """aiokafka calls -1 and every code it does not know UnknownError."""
    line = refusal_line(code, "Heartbeat", GROUP, 10_000)
    assert line is not None
    assert f"the broker answered Heartbeat for consumer group kappa-v1 with {said}, " in line


def test_a_commit_refused_the_group_names_it_as_a_heartbeat_refused_so_does() -> None:
    """On Kafka every partition is answered GROUP_AUTHORIZATION_FAILED; one is enough."""
    assert commit_refusal_line([("a", 0), ("b", 30), ("b", 29)], GROUP) == (
        "the broker refuses consumer group kappa-v1 to this client's principal (OffsetCommit "
        "answered GROUP_AUTHORIZATION_FAILED, not retried): grant the principal Read on the "
        "group (ACLs); stopping"
    )


def test_a_commit_refused_topics_names_those_topics() -> None:
    assert commit_refusal_line([("a", 0), ("b", 29), ("b", 29)], GROUP, then="so") == (
        "the broker refuses topic b to this client's principal (OffsetCommit answered "
        "TOPIC_AUTHORIZATION_FAILED, not retried): grant the principal Read on the topic "
        "(ACLs); so"
    )
    line = commit_refusal_line([("c", 29), ("a", 0), ("b", 29)], GROUP)
    assert line is not None
    assert line.startswith("the broker refuses topics b, c to this client's principal"), line
    assert "grant the principal Read on the topics (ACLs); stopping" in line, line


@pytest.mark.parametrize("code", [0, 14, 15, 16, 22, 25, 27, 28, 82])
def test_commit_answers_retrying_can_change_are_no_refusal(code: int) -> None:
    """A rebalance (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS; a replaced
    static member's commit is answered so, and `app.group_fence` stops on it), the coordinator
    moved or loading, an offset commit too large."""
    assert commit_refusal_line([("a", code), ("b", code)], GROUP) is None


class _Consumer:
    def __init__(self, client: ScriptedClient) -> None:
        self._client = client
        self._coordinator = ClosingCoordinator(GROUP, ME)
        self._group_id, self._session_timeout_ms = GROUP, 3000

    async def commit(self, request: OffsetCommitRequest) -> None:
        """aiokafka's, as far as it goes here: sent, and a partition's error raised."""
        answer = await self._client.send(1, request)
        for _, partitions in answer.topics:
            for _, code in partitions:
                if code:
                    raise for_code(code)()


def _watched(answers: list[Any]) -> tuple[_Consumer, GroupRefusal, list[str]]:
    consumer = _Consumer(ScriptedClient(answers))
    refusal = GroupRefusal()
    said: list[str] = []
    stop_when_refused(consumer, refusal, said.append)
    return consumer, refusal, said


async def _until_refused(refusal: GroupRefusal) -> None:
    await until(lambda: refusal.refused, "refused")


async def _settled(awaitable: Awaitable[Any], steps: int = 100) -> Any:
    """Its result once done (a failure, not a hang, if it waits for more than the loop)."""
    future = asyncio.ensure_future(awaitable)
    try:
        await until(future.done, "done", steps)
    except AssertionError:
        future.cancel()
        raise
    return future.result()


def _join() -> JoinGroupRequest:
    return JoinGroupRequest(GROUP, 3000, 10_000, "", None, "consumer", [])


def _lookup() -> FindCoordinatorRequest:
    """A lookup of the group's coordinator (Kafka asks for Describe on the group)."""
    return FindCoordinatorRequest(GROUP, 0)


def _sync() -> SyncGroupRequest:
    return SyncGroupRequest(GROUP, 3, ME, None, [])


async def test_other_answers_pass_as_they_were() -> None:
    join = JoinGroupResponse_v5(0, 0, 3, "sticky", ME, ME, [])
    beat = HeartbeatResponse_v1(0, 27)
    consumer, refusal, said = _watched([join, beat])
    assert await consumer._client.send(1, _join()) is join
    assert await consumer._client.send(1, HeartbeatRequest(GROUP, 3, ME)) is beat
    assert not refusal.refused and said == []


@pytest.mark.parametrize(
    "request_, answer, line",
    [
        (
            _join,
            JoinGroupResponse_v5(0, 26, -1, "", "", "", []),
            refusal_line(26, "JoinGroup", GROUP, 3000),
        ),
        (
            _sync,
            SyncGroupResponse_v3(0, 30, b""),
            refusal_line(30, "SyncGroup", GROUP, 3000),
        ),
        (
            lambda: HeartbeatRequest(GROUP, 3, ME),
            HeartbeatResponse_v1(0, 30),
            refusal_line(30, "Heartbeat", GROUP, 3000),
        ),
        (
            _lookup,
            FindCoordinatorResponse_v1(0, 30, None, -1, "", -1),
            refusal_line(30, "FindCoordinator", GROUP, 3000),
        ),
        (
            _join,
            JoinGroupResponse_v5(0, 42, -1, "", "", "", []),
            refusal_line(42, "JoinGroup", GROUP, 3000),
        ),
        (
            _sync,
            SyncGroupResponse_v3(0, -1, b""),
            refusal_line(-1, "SyncGroup", GROUP, 3000),
        ),
        (
            lambda: HeartbeatRequest(GROUP, 3, ME),
            HeartbeatResponse_v1(0, -1),
            refusal_line(-1, "Heartbeat", GROUP, 3000),
        ),
        (
            _lookup,
            FindCoordinatorResponse_v1(0, 35, None, -1, "", -1),
            refusal_line(35, "FindCoordinator", GROUP, 3000),
        ),
    ],
    ids=[
        "join",
        "sync",
        "heartbeat",
        "coordinator lookup",
        "join unexpected",
        "sync unexpected",
        "heartbeat unexpected",
        "coordinator lookup unexpected",
    ],
)
async def test_a_refusal_stops_the_worker_once_and_no_join_sync_or_heartbeat_follows_it(
    request_: Any, answer: Any, line: str
) -> None:
    """aiokafka never sees the answer: it would leave it for a fetch that never comes (a join),
    or crash faust's fetcher with it (a heartbeat)."""
    metadata = object()
    consumer, refusal, said = _watched([answer, metadata])
    client = consumer._client
    refused = asyncio.ensure_future(client.send(1, request_()))
    later = [
        asyncio.ensure_future(client.send(1, r))
        for r in (_join(), _sync(), HeartbeatRequest(GROUP, 3, ME), _lookup())
    ]
    await _until_refused(refusal)  # the others then run up to where they wait
    assert said == [line]
    assert await client.send(1, MetadataRequest([])) is metadata  # not a member's request
    assert not any(f.done() for f in [refused, *later])  # held until the consumer closes
    consumer._coordinator._closing.set_result(None)
    for unsent in (refused, *later):
        with pytest.raises(GroupRefused):
            await unsent
    assert len(client.sent) == 2  # the refused request and the metadata request
    assert said == [line]  # said once


async def test_a_refused_lookup_leaves_no_fetch_waiting_for_its_error() -> None:
    """aiokafka's coordination routine hands a failed lookup to every fetch waiting; faust,
    stopping, left one waiting that nothing awaits: "Future exception was never retrieved"."""
    consumer, refusal, _ = _watched([FindCoordinatorResponse_v1(0, 30, None, -1, "", -1)])
    left = asyncio.get_running_loop().create_future()
    consumer._fetcher = SimpleNamespace(_fetch_waiters={left})
    lookup = asyncio.ensure_future(consumer._client.send(1, _lookup()))
    await _until_refused(refusal)
    assert not left.done()  # until the consumer closes
    consumer._coordinator._closing.set_result(None)
    with pytest.raises(GroupRefused):
        await lookup
    assert left.done() and left.result() is None  # as the fetcher's close would


def _commit() -> OffsetCommitRequest:
    return OffsetCommitRequest(GROUP, 3, ME, -1, [("orders", [(0, 5, "")])])


def _committed(code: int) -> OffsetCommitResponse_v2:
    return OffsetCommitResponse_v2([("orders", [(0, code)])])


@pytest.mark.parametrize("code", [30, 29], ids=["group", "topic"])
async def test_a_refused_commit_stops_the_worker_and_no_commit_follows_it(code: int) -> None:
    """aiokafka raises the answer from the commit: faust would crash on it with a traceback.
    The commits return at once, not when the consumer closes: faust awaits them, on stop too."""
    consumer, refusal, said = _watched([_committed(code)])
    await _settled(consumer.commit(_commit()))  # faust's commit: returns, nothing committed
    assert refusal.refused and said == [commit_refusal_line([("orders", code)], GROUP)]
    await _settled(consumer.commit(_commit()))
    assert len(consumer._client.sent) == 1 and len(said) == 1
    assert not consumer._coordinator._closing.done()


async def test_a_refused_commits_answer_reaches_aiokafka_as_it_is() -> None:
    """Failed unsent, aiokafka would mark the coordinator dead and look it up again, only for
    that lookup to wait for the consumer to close."""
    answer = _committed(30)
    consumer, refusal, _ = _watched([answer])
    assert await _settled(consumer._client.send(1, _commit())) is answer
    assert refusal.refused


async def test_a_commit_under_way_when_another_answer_refuses_the_member_returns() -> None:
    """Its own answer, refused or not (here a rebalance's), is no news: the worker is stopping."""
    consumer, refusal, said = _watched([])

    def refused_meanwhile() -> Any:
        refusal.refuse()  # by a heartbeat's answer, say
        return _committed(25)

    consumer._client.answers.append(refused_meanwhile)
    await _settled(consumer.commit(_commit()))
    assert said == []  # said by the other answer's


async def test_a_commit_failing_otherwise_fails_as_it_did() -> None:
    """faust takes a rebalance's for what it is."""
    consumer, refusal, _ = _watched([_committed(25)])
    with pytest.raises(UnknownMemberIdError):
        await _settled(consumer.commit(_commit()))
    assert not refusal.refused


async def test_a_commit_held_when_another_answer_refuses_the_member_returns_at_once() -> None:
    """Held by its coordinator lookup, say, which waits for the consumer to close as a refused
    member's do: faust awaits the commit before it closes the consumer, so the worker would
    hang until its shutdown deadline."""
    held: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    consumer, refusal, said = _watched([held])
    commit = asyncio.ensure_future(consumer.commit(_commit()))
    await until(lambda: bool(consumer._client.sent), "sent")
    assert not commit.done()
    refusal.refuse()  # by a heartbeat's answer, say
    assert await _settled(commit) is None
    assert held.cancelled() and said == []  # its wait let go; said by the other answer's


@pytest.mark.parametrize("code", [0, 22, 25, 27])
async def test_commit_answers_that_are_no_refusal_pass_as_they_were(code: int) -> None:
    """aiokafka handles a rebalance's (it joins again); the fence a replaced static member's."""
    answer = _committed(code)
    consumer, refusal, said = _watched([answer])
    assert await _settled(consumer._client.send(1, _commit())) is answer
    assert not refusal.refused and said == []


async def test_a_heartbeat_held_when_refused_is_cancelled_with_the_consumer_left_open() -> None:
    """aiokafka's close cancels its heartbeat task: that must not cancel its close itself."""
    consumer, refusal, _ = _watched([HeartbeatResponse_v1(0, 30)])
    beat = asyncio.ensure_future(consumer._client.send(1, HeartbeatRequest(GROUP, 3, ME)))
    await _until_refused(refusal)
    beat.cancel()
    with pytest.raises(asyncio.CancelledError):
        await beat
    assert not consumer._coordinator._closing.cancelled()


async def test_the_coordinators_warnings_are_not_logged_once_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiokafka's "Error sending JoinGroupRequest ... marking coordinator dead" when the held
    request fails at close would be a second ERROR line."""
    consumer, refusal, _ = _watched([JoinGroupResponse_v5(0, 26, -1, "", "", "", [])])
    with caplog.at_level(logging.INFO, logger=COORDINATOR_LOG.name):
        COORDINATOR_LOG.warning("Marking the coordinator dead before")
        join = asyncio.ensure_future(consumer._client.send(1, _join()))
        await _until_refused(refusal)
        COORDINATOR_LOG.error("Error sending JoinGroupRequest_v5 to node 1 [GroupRefused]")
        COORDINATOR_LOG.info("Discovered coordinator 1")
    assert [r.getMessage() for r in caplog.records] == [
        "Marking the coordinator dead before",
        "Discovered coordinator 1",
    ]
    join.cancel()


def test_only_the_commit_refusals_a_replay_says_itself_are_not_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """aiokafka's ERROR line would come before the replay's own; its others still show."""
    refused = ("OffsetCommit failed for group %s - %s", GROUP, "GroupAuthorizationFailedError")
    with caplog.at_level(logging.INFO, logger=COORDINATOR_LOG.name):
        with quiet_commit_refusals():
            COORDINATOR_LOG.error(*refused)
            COORDINATOR_LOG.error("OffsetCommit failed for unauthorized topics %s", {"orders"})
            COORDINATOR_LOG.error("OffsetCommit failed for group %s - rejoining", GROUP)
        COORDINATOR_LOG.error(*refused)
    assert [r.getMessage() for r in caplog.records] == [
        "OffsetCommit failed for group kappa-v1 - rejoining",
        "OffsetCommit failed for group kappa-v1 - GroupAuthorizationFailedError",
    ]


class _LeavingCoordinator:
    group_id, member_id, generation, _group_instance_id = GROUP, ME, 3, None

    def __init__(self) -> None:
        self.sent: list[Any] = []

    async def _send_req(self, request: Any) -> None:
        self.sent.append(request)

    def reset_generation(self) -> None:
        self.generation = -1


@pytest.mark.parametrize("refused", [True, False], ids=["refused", "not refused"])
async def test_a_refused_member_does_not_try_to_leave_its_group(refused: bool) -> None:
    """The broker would refuse the LeaveGroup too, and the worker warn of it after its line."""
    coordinator = _LeavingCoordinator()
    await _leave_group(coordinator, lambda: refused)
    assert len(coordinator.sent) == (0 if refused else 1)
    assert coordinator.generation == -1


async def test_a_refused_worker_commits_nothing_more(tmp_path: Path) -> None:
    """faust would crash with a traceback on the broker's refusal of the commit."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)
    try:
        assert app.kappa_group_refusal.refuse()
        assert await thread._commit({}) is False  # faust's would need the started consumer
    finally:
        await consumer.stop()


async def test_a_commit_under_way_when_refused_is_not_counted_as_done(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust would record its offsets as committed (`consumer.commit` returns unsent)."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    thread = app.consumer._thread
    consumer = thread._create_worker_consumer(app.transport)

    async def refused_meanwhile(self: Any, offsets: Any) -> bool:
        app.kappa_group_refusal.refuse()
        return True

    monkeypatch.setattr(AIOKafkaConsumerThread, "_commit", refused_meanwhile)
    try:
        assert await thread._commit({}) is False
    finally:
        await consumer.stop()


async def test_a_worker_refused_its_group_stops_with_the_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[Any] = []
    monkeypatch.setattr(
        "app.batch_delivery.stop_when_refused", lambda _c, _r, on_refused: calls.append(on_refused)
    )
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    stopped: asyncio.Future[tuple[BaseException, str]] = asyncio.get_running_loop().create_future()

    async def stop(reason: BaseException, line: str) -> None:
        stopped.set_result((reason, line))

    app.kappa_stop_on_error = stop
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        (on_refused,) = calls
        await asyncio.get_running_loop().run_in_executor(None, on_refused, "the line")
        reason, line = await stopped
        assert isinstance(reason, GroupRefused) and line == "the line"
    finally:
        await consumer.stop()


def test_a_refusal_wakes_a_wait_in_another_threads_loop() -> None:
    """The commit's wait runs in the consumer's thread; the refusal may come from any."""
    refusal = GroupRefusal()
    waiting, woken = threading.Event(), threading.Event()

    async def wait() -> None:
        waiter = asyncio.ensure_future(refusal.wait())
        await until(lambda: bool(refusal._waiters), "waiting")
        waiting.set()
        await waiter
        woken.set()

    thread = threading.Thread(target=asyncio.run, args=(wait(),), daemon=True)
    thread.start()
    assert waiting.wait(30)
    assert refusal.refuse()
    thread.join(30)
    assert woken.is_set()


def test_a_refusal_with_a_waiter_whose_loop_has_closed_is_still_said() -> None:
    """`call_soon_threadsafe` on a closed loop raises: out of the consumer thread's send."""
    refusal = GroupRefusal()
    loop = asyncio.new_event_loop()
    waiting = loop.create_task(refusal.wait())
    loop.run_until_complete(until(lambda: bool(refusal._waiters), "waiting"))
    loop.close()  # its thread ended, the wait left behind
    assert refusal.refuse()
    assert refusal.refused
    waiting._log_destroy_pending = False  # left pending on purpose
