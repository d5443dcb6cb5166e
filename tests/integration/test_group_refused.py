"""A worker the broker refuses its consumer group for a reason retrying cannot change (a
session timeout outside the broker's bounds, no Read ACL on the group) stops in one line
naming what to change, with exit status 1.

The dev broker never refuses so, so a `FaultProxy` between the worker and a broker of the
test's own answers in its place. Before: a refused join left the worker joining for ever
behind a healthy /health (aiokafka's one ERROR line, or none for the ACL), and a refused
heartbeat crashed it with a traceback.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app.orders_generator import GeneratorSpec, generate
from app.produce import produce_records
from tests.support.kafka_proxy import (
    FIND_COORDINATOR,
    HEARTBEAT,
    JOIN_GROUP,
    OFFSET_COMMIT,
    SYNC_GROUP,
    FaultProxy,
)
from tests.support.workers import (
    Worker,
    group_warnings,
    kappa_env,
    run_kappa,
    stopped_in_one_error,
)

pytestmark = pytest.mark.integration

INVALID_SESSION_TIMEOUT, TOPIC_AUTHORIZATION_FAILED, GROUP_AUTHORIZATION_FAILED = 26, 29, 30
NOT_COORDINATOR, REBALANCE_IN_PROGRESS = 16, 27
UNKNOWN_SERVER_ERROR, UNSUPPORTED_VERSION, INVALID_REQUEST = -1, 35, 42


def _group_refused(unique: str, request: str) -> str:
    """The line a worker whose principal may not read its group stops with."""
    return (
        f"kappa worker: the broker refuses consumer group kappa-{unique}-v1 to this client's "
        f"principal ({request} answered GROUP_AUTHORIZATION_FAILED, not retried): grant the "
        "principal Read on the group (ACLs); stopping"
    )


def _stopped_in_one_line(worker: Worker, warned_before: bool = False) -> str:
    """The one ERROR line a worker that exited 1, with no traceback, no warning about its
    group (after it, if `warned_before`: aiokafka's, of a coordinator that moved) and no
    shutdown cut short by its deadline, said."""
    said, log = stopped_in_one_error(worker)
    assert "never retrieved" not in log, log[-3000:]
    assert "shutdown did not finish" not in log, log[-3000:]  # nothing hung
    if warned_before:
        log = log[log.index(said) :]
    assert not group_warnings(log), log[-3000:]
    return said


def _refused(
    proxy: FaultProxy,
    unique: str,
    tmp_path: Path,
    api_key: int,
    code: int,
    in_group: bool = False,
    **env: str,
) -> str:
    """The line a worker whose every `api_key` request is answered `code` stops with: from its
    start, or (`in_group`) from when it is in its group."""
    environment = kappa_env(f"127.0.0.1:{proxy.port}", unique, tmp_path / "state", **env)
    assert run_kappa(["topics"], environment).returncode == 0
    if not in_group:
        proxy.answer(api_key, code)
    worker = Worker(environment, tmp_path / "worker.log").start()
    try:
        if in_group:
            worker.wait_until(lambda _: worker.ready()[0] == 200)
            proxy.answer(api_key, code)
        return _stopped_in_one_line(worker)
    finally:
        worker.stop()


def test_a_worker_whose_session_timeout_the_broker_refuses_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path
) -> None:
    """Apache Kafka answers a JoinGroup whose session timeout is outside its
    group.min.session.timeout.ms (6 s by default) and group.max.session.timeout.ms so."""
    said = _refused(
        proxy,
        unique,
        tmp_path,
        JOIN_GROUP,
        INVALID_SESSION_TIMEOUT,
        KAPPA_SESSION_TIMEOUT_MS="3000",
    )
    assert (
        f"kappa worker: the broker refuses KAPPA_SESSION_TIMEOUT_MS=3000 for consumer group "
        f"kappa-{unique}-v1 (JoinGroup answered INVALID_SESSION_TIMEOUT, not retried): set "
        "KAPPA_SESSION_TIMEOUT_MS within the broker's group.min.session.timeout.ms" in said
    ), said
    assert proxy.fenced_answers == 1  # asked once: not retried


def test_a_worker_whose_heartbeat_the_broker_refuses_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path
) -> None:
    """A Read ACL on the group taken away from a worker in its group."""
    said = _refused(proxy, unique, tmp_path, HEARTBEAT, GROUP_AUTHORIZATION_FAILED, in_group=True)
    assert _group_refused(unique, "Heartbeat") in said, said


@pytest.mark.parametrize(
    "code, refused",
    [
        (
            GROUP_AUTHORIZATION_FAILED,
            [
                "kappa worker: the broker refuses consumer group kappa-{unique}-v1 to this "
                "client's principal (OffsetCommit answered GROUP_AUTHORIZATION_FAILED, not "
                "retried): grant the principal Read on the group (ACLs); stopping"
            ],
        ),
        (  # the proxy refuses every partition: those of the topics pipelines read each other's
            TOPIC_AUTHORIZATION_FAILED,
            [
                "kappa worker: the broker refuses topics {unique}.orders, ",
                " to this client's principal (OffsetCommit answered TOPIC_AUTHORIZATION_FAILED, "
                "not retried): grant the principal Read on the topics (ACLs); stopping",
            ],
        ),
    ],
    ids=["group", "topic"],
)
async def test_a_worker_whose_offset_commit_the_broker_refuses_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path, code: int, refused: list[str]
) -> None:
    """A Read ACL on the group, or on a source topic, taken away from a worker in its group:
    its next commit is refused (each partition's answer says so). Before, faust's commit
    crashed the worker with a traceback."""
    address = f"127.0.0.1:{proxy.port}"
    env = kappa_env(address, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_until(lambda _: worker.ready()[0] == 200)
        proxy.answer(OFFSET_COMMIT, code)
        spec = GeneratorSpec(count=50, seed=5, keys=20, start_ms=1_700_000_000_000)
        orders = ((r.key, r.value) for r in generate(spec))
        await produce_records(address, f"{unique}.orders", orders, progress=False)  # to commit
        said = _stopped_in_one_line(worker)
        assert all(part.format(unique=unique) in said for part in refused), said
        assert proxy.fenced_answers == 1  # committed once: not retried, nor on the stop
    finally:
        worker.stop()


@pytest.mark.parametrize(
    "code, refused",
    [
        (
            GROUP_AUTHORIZATION_FAILED,
            "the broker refuses consumer group kappa-{unique}-v2 to this client's principal "
            "(OffsetCommit answered GROUP_AUTHORIZATION_FAILED, not retried): grant the "
            "principal Read on the group (ACLs)",
        ),
        (
            TOPIC_AUTHORIZATION_FAILED,
            "the broker refuses topic {unique}.orders to this client's principal (OffsetCommit "
            "answered TOPIC_AUTHORIZATION_FAILED, not retried): grant the principal Read on "
            "the topic (ACLs)",
        ),
    ],
    ids=["group", "topic"],
)
async def test_a_replay_whose_offset_commit_the_broker_refuses_says_what_to_change(
    proxy: FaultProxy, unique: str, tmp_path: Path, code: int, refused: str
) -> None:
    """A replay reads without a group, so its commit at the end of each pipeline is where the
    broker says it refuses the group. Before, aiokafka's ERROR line came first, and the error
    named no ACL. Run again once granted, it resumes and commits."""
    address = f"127.0.0.1:{proxy.port}"
    env = kappa_env(address, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    spec = GeneratorSpec(count=50, seed=5, keys=20, start_ms=1_700_000_000_000)
    orders = ((r.key, r.value) for r in generate(spec))
    await produce_records(address, f"{unique}.orders", orders, progress=False)
    proxy.answer(OFFSET_COMMIT, code)
    replay = ["replay", "orders", "--version", "2", "--no-progress"]
    r = run_kappa(replay, env)
    assert r.returncode == 2, r.stderr
    assert "ERROR" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    said = [line for line in r.stderr.splitlines() if "error" in line]
    assert said == [
        f"kappa replay: error: {refused.format(unique=unique)}; its positions in {unique}.orders "
        "are not committed: run the replay again once granted (it resumes)"
    ], r.stderr
    proxy.forward(OFFSET_COMMIT)
    again = run_kappa(replay, env)
    assert again.returncode == 0, again.stderr
    assert OFFSET_COMMIT in proxy.seen_after_fence()  # committed, this time


def test_a_worker_whose_coordinator_lookup_the_broker_refuses_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path
) -> None:
    """Apache Kafka answers FindCoordinator so for a principal that may not describe the group."""
    said = _refused(proxy, unique, tmp_path, FIND_COORDINATOR, GROUP_AUTHORIZATION_FAILED)
    assert _group_refused(unique, "FindCoordinator") in said, said


@pytest.mark.parametrize("moved_by", [HEARTBEAT, OFFSET_COMMIT], ids=["heartbeat", "commit"])
async def test_a_worker_whose_coordinator_moved_and_whose_lookup_is_refused_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path, moved_by: int
) -> None:
    """A worker in its group, fetching, whose next lookup of its coordinator is refused: before,
    the lookup's error reached a fetch faust had left ("Future exception was never
    retrieved"), and a commit looking the coordinator up again held the worker's stop until
    its shutdown deadline."""
    address = f"127.0.0.1:{proxy.port}"
    env = kappa_env(address, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        worker.wait_until(lambda _: worker.ready()[0] == 200)
        proxy.answer(FIND_COORDINATOR, GROUP_AUTHORIZATION_FAILED)
        proxy.answer(moved_by, NOT_COORDINATOR)
        if moved_by == OFFSET_COMMIT:
            spec = GeneratorSpec(count=50, seed=5, keys=20, start_ms=1_700_000_000_000)
            orders = ((r.key, r.value) for r in generate(spec))
            await produce_records(address, f"{unique}.orders", orders, progress=False)
        said = _stopped_in_one_line(worker, warned_before=True)
        assert _group_refused(unique, "FindCoordinator") in said, said
    finally:
        worker.stop()


@pytest.mark.parametrize(
    "api_key, code, said",
    [
        (
            JOIN_GROUP,
            INVALID_REQUEST,
            "JoinGroup for consumer group kappa-{unique}-v1 with INVALID_REQUEST (42)",
        ),
        (
            SYNC_GROUP,
            UNKNOWN_SERVER_ERROR,
            "SyncGroup for consumer group kappa-{unique}-v1 with UNKNOWN_SERVER_ERROR (-1)",
        ),
        (
            FIND_COORDINATOR,
            UNSUPPORTED_VERSION,
            "FindCoordinator for consumer group kappa-{unique}-v1 with UNSUPPORTED_VERSION (35)",
        ),
    ],
    ids=["join", "sync", "coordinator lookup"],
)
def test_a_worker_whose_join_is_answered_an_error_aiokafka_does_not_retry_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path, api_key: int, code: int, said: str
) -> None:
    """Before, aiokafka logged the error once and left it for a fetch faust makes only in the
    group: the worker stayed out of its group for ever, the request never asked again."""
    line = _refused(proxy, unique, tmp_path, api_key, code)
    assert (
        f"kappa worker: the broker answered {said.format(unique=unique)}, which neither aiokafka "
        "nor Kafka's own consumer retries there: the broker's log may say why; stopping" in line
    ), line
    assert proxy.fenced_answers == 1  # asked once: not retried


def test_a_worker_whose_heartbeat_is_answered_an_error_aiokafka_does_not_retry_stops_in_one_line(
    proxy: FaultProxy, unique: str, tmp_path: Path
) -> None:
    """Kafka answers UNKNOWN_SERVER_ERROR for a failure of its own. Before, aiokafka raised
    it from faust's next fetch: a traceback."""
    said = _refused(proxy, unique, tmp_path, HEARTBEAT, UNKNOWN_SERVER_ERROR, in_group=True)
    assert (
        f"kappa worker: the broker answered Heartbeat for consumer group kappa-{unique}-v1 "
        "with UNKNOWN_SERVER_ERROR (-1), which neither aiokafka nor Kafka's own consumer "
        "retries there" in said
    ), said
    assert proxy.fenced_answers == 1


def test_a_worker_whose_join_is_answered_rebalance_in_progress_joins_once_it_is_not(
    proxy: FaultProxy, unique: str, tmp_path: Path
) -> None:
    """Kafka answers a JoinGroup so when writing the group's state timed out (an
    under-replicated offsets topic, say); the Java consumer retries. aiokafka left the answer
    for a fetch faust does not make out of its group: the worker never joined."""
    address = f"127.0.0.1:{proxy.port}"
    env = kappa_env(address, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    proxy.answer(JOIN_GROUP, REBALANCE_IN_PROGRESS)
    worker = Worker(env, tmp_path / "worker.log").start()
    try:
        deadline = time.monotonic() + 60
        while proxy.fenced_answers < 2:  # answered so, and asked again
            assert worker.proc is not None and worker.proc.poll() is None, worker.tail_log()
            assert time.monotonic() < deadline, f"the join was not retried\n{worker.tail_log()}"
            time.sleep(0.05)
        proxy.forward(JOIN_GROUP)
        worker.wait_until(lambda _: worker.ready()[0] == 200)
        log = worker.log_path.read_text(errors="replace")
        assert "[ERROR]" not in log and "Traceback" not in log, log[-3000:]
    finally:
        worker.stop()
