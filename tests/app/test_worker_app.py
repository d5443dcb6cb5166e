"""The worker's Faust app as configured from settings (no broker: nothing is started)."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from app.settings import load_settings
from app.worker import BoundedStopWorker, StopOnError, _FaustSource, create_app


@pytest.mark.parametrize(
    "host,url", [("::1", "http://[::1]:6066"), ("127.0.0.1", "http://127.0.0.1:6066")]
)
def test_the_web_server_binds_the_host_given_ipv6_included(
    tmp_path: Path, host: str, url: str
) -> None:
    settings = load_settings({"KAPPA_WEB_HOST": host, "KAPPA_STATE_DIR": str(tmp_path)})
    app = create_app(settings, 1)
    assert str(app.conf.canonical_url) == url  # faust refused "http://::1:6066"
    assert app.conf.web_bind == host


def test_a_file_where_the_workers_faust_directory_goes_is_one_line(tmp_path: Path) -> None:
    from tables.partition_state import StateError

    (tmp_path / "faust").write_text("not a directory")
    with pytest.raises(StateError) as refused:
        create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    assert str(refused.value) == f"cannot create {tmp_path / 'faust'} for the worker: File exists"


async def test_the_worker_consumer_assigns_partitions_sticky(tmp_path: Path) -> None:
    """A worker joining or leaving moves only the partitions it must (each move is a restore)."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    thread = app.consumer._thread
    consumers = [thread._create_worker_consumer(app.transport) for _ in range(2)]
    try:
        first, second = (c._partition_assignment_strategy for c in consumers)
        assert [a.name for a in first] == ["sticky"]
        # The sticky assignor keeps its member's last assignment in class attributes: one
        # class per consumer, or two consumers in a process would report each other's.
        assert first[0] is not second[0]
    finally:
        for c in consumers:
            await c.stop()


async def test_a_worker_joins_naming_the_state_it_has_unless_it_is_a_static_member(
    tmp_path: Path,
) -> None:
    """A static member restarted in time keeps its partitions only if it rejoins with the join
    metadata it last joined with (on the dev broker), and state it opened since changes it."""
    from app.partition_owners import member_local_state

    (tmp_path / "v1" / "orders" / "p2").mkdir(parents=True)
    for instance, said in (("", [("orders", 2)]), ("worker-0", [])):
        env = {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_GROUP_INSTANCE_ID": instance}
        app = create_app(load_settings(env), 1)
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            (assignor,) = consumer._partition_assignment_strategy
            joined = assignor.metadata(["orders"])
            assert member_local_state(joined.user_data) == said
        finally:
            await consumer.stop()


def test_the_sticky_assignor_claims_its_partitions_as_of_the_groups_generation() -> None:
    """aiokafka never tells the assignor the generation: without it every member claims its
    partitions as of generation -1, and a member back from a timeout could win a partition
    from its current owner."""
    from types import SimpleNamespace

    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    from app.batch_delivery import sticky_assignor

    consumer = SimpleNamespace(_coordinator=SimpleNamespace(generation=7))
    assignor = sticky_assignor(consumer)
    assignor.on_assignment(ConsumerProtocolMemberAssignment(0, [("orders", [1, 3])], b""))
    claim = assignor.parse_member_metadata(assignor.metadata(["orders"]))
    assert claim.generation == 7
    assert sorted(tp.partition for tp in claim.partitions) == [1, 3]


def test_the_leader_gives_each_worker_its_share_of_every_source() -> None:
    """aiokafka's own sticky assignment evens out members' totals only: it kept a worker on two
    whole sources and the other on the other two, while pipelines cost very different amounts
    per record. The owners map names the worker each partition went to."""
    from types import SimpleNamespace

    from aiokafka.coordinator.protocol import ConsumerProtocolMemberAssignment

    from app.batch_delivery import sticky_assignor
    from app.partition_owners import PartitionOwners, parse_owners

    sources = ["p.orders", "p.orders.by-user", "p.orders.by-window", "p.orders.revenue-1m"]
    cluster = SimpleNamespace(
        topics=lambda: set(sources), partitions_for_topic=lambda t: {0, 1, 2, 3}
    )
    workers = {}
    for name, held in (("w-a", sources[:2]), ("w-b", sources[2:])):
        consumer = SimpleNamespace(_coordinator=SimpleNamespace(generation=5))
        workers[name] = sticky_assignor(consumer, PartitionOwners(f"http://{name}:6066"))
        workers[name].on_assignment(
            ConsumerProtocolMemberAssignment(0, [(t, [0, 1, 2, 3]) for t in held], b"")
        )
    got = workers["w-a"].assign(cluster, {n: a.metadata(sources) for n, a in workers.items()})
    for name in workers:
        assert [(t, len(ps)) for t, ps in got[name].assignment] == [(t, 2) for t in sources]
        assert parse_owners(got[name].user_data) == {
            (t, p): f"http://{n}:6066" for n in workers for t, ps in got[n].assignment for p in ps
        }


def test_a_source_the_leader_has_no_metadata_for_yet_is_left_out() -> None:
    """It is assigned once the leader's metadata has it (aiokafka then rejoins the group)."""
    from types import SimpleNamespace

    from app.batch_delivery import sticky_assignor

    assignor = sticky_assignor(SimpleNamespace())
    cluster = SimpleNamespace(
        topics=lambda: {"p.orders"},
        partitions_for_topic=lambda t: {0, 1} if t == "p.orders" else None,
    )
    got = assignor.assign(cluster, {"w": assignor.metadata(["p.orders", "p.new"])})
    assert got["w"].assignment == [("p.orders", [0, 1])]


@pytest.mark.parametrize("url", [None, "http://kappa-worker-0.kappa-worker:6066"])
def test_a_worker_joins_with_the_same_metadata_whatever_its_subscriptions_order(
    url: str | None,
) -> None:
    """faust's subscription is a set, ordered differently in each process: a restarted static
    member's join must not look changed to the broker (the dev broker then refused it)."""
    from types import SimpleNamespace

    from app.batch_delivery import sticky_assignor
    from app.partition_owners import PartitionOwners

    topics = ["p.orders", "p.orders.by-user", "p.orders.by-window", "p.orders.revenue-1m"]
    joins = {
        sticky_assignor(SimpleNamespace(), None if url is None else PartitionOwners(url))
        .metadata(order)
        .encode()
        for order in (topics, topics[::-1], topics[1:] + topics[:1])
    }
    assert len(joins) == 1


async def test_the_max_poll_interval_reaches_the_consumer(tmp_path: Path) -> None:
    """Past it without a poll the worker leaves its group (and stops: faust never rejoins)."""
    default = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    assert default.max_poll_interval_ms == 300_000  # Kafka's: a restore no longer holds polls
    settings = load_settings(
        {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_MAX_POLL_INTERVAL_MS": "7200000"}
    )
    app = create_app(settings, 1)
    consumer = app.consumer._thread._create_worker_consumer(app.transport)
    try:
        assert consumer._max_poll_interval_ms == 7_200_000
    finally:
        await consumer.stop()


@pytest.mark.parametrize("idle_s", [None, 0.0, 7199.9])
def test_a_fetch_loop_within_the_max_poll_interval_is_no_reason_to_stop(
    tmp_path: Path, idle_s: float | None
) -> None:
    from app.worker import fetch_loop_stalled

    settings = load_settings(
        {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_MAX_POLL_INTERVAL_MS": "7200000"}
    )
    assert fetch_loop_stalled(idle_s, settings) is None


async def test_a_worker_whose_consumer_left_the_group_for_a_stalled_fetch_loop_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """aiokafka leaves the group past the max poll interval without a fetch and then refuses
    to rejoin, and faust fetches again only once assigned: the worker would sit idle."""
    from faust.types import TP

    from app import worker

    settings = load_settings({"KAPPA_STATE_DIR": str(tmp_path)})
    app = worker.create_app(settings, 1, ["orders"])
    stopped: list[BaseException] = []

    async def stop_on_error(exc: BaseException, line: str) -> None:
        stopped.append(exc)

    monkeypatch.setattr(app, "kappa_stop_on_error", stop_on_error)
    monkeypatch.setattr(worker, "consumer_idle_s", lambda app: 3_601.0)
    (source,) = app.kappa_batch_buffers
    await asyncio.wait_for(app.on_partitions_revoked.send({TP(source, 0)}), 10)
    (reason,) = stopped
    assert isinstance(reason, worker.FetchLoopStalled)
    assert str(reason) == (
        "the worker went 3601s without polling its consumer, past "
        "KAPPA_MAX_POLL_INTERVAL_MS=300000, so it left its consumer group and cannot rejoin; "
        "stopping"
    )


def test_the_consumers_idle_time_is_aiokafkas_own() -> None:
    from types import SimpleNamespace

    from app.batch_delivery import consumer_idle_s

    subscription = SimpleNamespace(fetcher_idle_time=12.5)
    thread = SimpleNamespace(_consumer=SimpleNamespace(_subscription=subscription))
    assert consumer_idle_s(SimpleNamespace(consumer=SimpleNamespace(_thread=thread))) == 12.5
    no_consumer_yet = SimpleNamespace(_consumer=None)
    assert (
        consumer_idle_s(SimpleNamespace(consumer=SimpleNamespace(_thread=no_consumer_yet))) is None
    )


async def test_the_worker_subscribes_without_faust_s_wait_for_late_tables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faust's table manager sleeps 1 s before subscribing, for faust tables that Kappa does
    not have: a second on every worker start."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    manager = app.tables
    steps: list[str] = []

    async def sleep(seconds: float) -> None:
        steps.append(f"sleep {seconds}")

    async def update_channels() -> None:
        steps.append("subscribe")

    class Recovery:
        async def start(self) -> None:
            steps.append("recover")

    monkeypatch.setattr(manager, "sleep", sleep)
    monkeypatch.setattr(manager, "_update_channels", update_channels)
    monkeypatch.setattr(type(manager), "recovery", Recovery())
    await manager.on_start()
    assert steps == ["subscribe", "recover"]


async def test_the_worker_closes_its_loop_without_mode_s_one_second_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from app.worker import LOOP_CLOSE_GRACE_S, BoundedStopWorker

    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(asyncio, "sleep", sleep)
    await BoundedStopWorker._sentinel_task(object())  # type: ignore[arg-type]
    assert slept == [LOOP_CLOSE_GRACE_S] and LOOP_CLOSE_GRACE_S < 1.0


@pytest.mark.parametrize("session_ms,heartbeat_s", [(10_000, 1.0), (1_500, 0.5), (85_000, 1.0)])
def test_a_worker_heartbeats_every_third_of_its_session_and_at_least_every_second(
    tmp_path: Path, session_ms: int, heartbeat_s: float
) -> None:
    """A heartbeat is how a member learns a rebalance began: the whole group waits for the
    slowest member's next one."""
    env = {"KAPPA_STATE_DIR": str(tmp_path), "KAPPA_SESSION_TIMEOUT_MS": str(session_ms)}
    app = create_app(load_settings(env), 1)
    assert app.conf.broker_heartbeat_interval == heartbeat_s


async def test_only_the_first_reason_to_stop_is_an_error_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Pipelines failing on one cause (every changelog gone after a dev-broker restart) said
    it once each, at ERROR: four lines where the README promises one."""
    import signal

    from app import worker

    signals: list[int] = []
    monkeypatch.setattr(worker.os, "kill", lambda pid, sig: signals.append(sig))
    stop = worker.StopOnError()
    with caplog.at_level(logging.INFO, logger="app.worker"):
        await stop(ValueError("a"), "topic a is gone")
        await stop(ValueError("b"), "topic b is gone")
    assert signals == [signal.SIGTERM]
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("ERROR", "kappa worker: topic a is gone"),
        ("INFO", "kappa worker: also: topic b is gone"),
    ]
    assert str(stop.reason) == "a" and stop.exit_code == 1


def test_a_worker_limits_the_clients_repeated_errors(tmp_path: Path) -> None:
    """While the broker was away, one worker logged about 1,900 aiokafka ERROR lines in 40 s."""
    from app.log_repeats import RepeatLimiter

    create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1, ["orders"])
    for name in ("aiokafka", "aiokafka.conn", "aiokafka.consumer.fetcher"):
        filters = logging.getLogger(name).filters
        assert any(isinstance(f, RepeatLimiter) for f in filters), name


def _worker(tmp_path: Path, stdout: object) -> BoundedStopWorker:
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    return BoundedStopWorker(
        app, stdout=stdout, quiet=True, stop_timeout_s=1.0, stop_on_error=StopOnError()
    )


def test_faust_s_start_up_spinner_is_left_out_when_the_output_is_a_file(tmp_path: Path) -> None:
    """It writes "hide the cursor" (and backspaces, "show it") even to a file."""
    with (tmp_path / "worker.log").open("w") as log:
        assert _worker(tmp_path, log).spinner is None
    assert (tmp_path / "worker.log").read_text() == ""


def test_faust_s_start_up_spinner_spins_on_a_terminal(tmp_path: Path) -> None:
    import os
    import pty

    controller, terminal = pty.openpty()
    try:
        with os.fdopen(terminal, "w", closefd=False) as tty:
            assert _worker(tmp_path, tty).spinner is not None
    finally:
        os.close(controller)
        os.close(terminal)


async def test_a_stopping_worker_closes_its_producers_at_once_and_not_past_a_deadline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A producer's stop waits for the requests in flight: against a broker that does not
    answer, up to aiokafka's request timeout (40 s), one pipeline's after the other's.
    What they carry was not acknowledged, so nothing was committed for it: it is read again."""
    from app import worker
    from app.batch_producer import OwnProducerSender

    monkeypatch.setattr("app.kafka_runner.HELD_SEND_ON_STOP_S", 0.05)
    closing: list[str] = []

    class _FirstHangs(OwnProducerSender):
        """The first pipeline's close never ends (requests in flight); the other's at once."""

        async def close(self) -> None:
            if not closing:
                closing.append("hanging")
                await asyncio.Event().wait()
            closing.append("closed")

    monkeypatch.setattr(worker, "OwnProducerSender", _FirstHangs)
    app = create_app(
        load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1, ["orders", "user-totals"]
    )
    with caplog.at_level(logging.WARNING, logger="app.kafka_runner"):
        await asyncio.wait_for(app.on_before_shutdown.send(), 5)  # without the deadline: never
    assert closing == ["hanging", "closed"]
    assert [r.getMessage() for r in caplog.records] == [
        "closing the producers did not end within 0.05s of the stop; cancelled"
    ]


def test_a_worker_whose_consumer_has_not_started_has_no_partitions(tmp_path: Path) -> None:
    """`/metrics` and `/ready` are served from the web server's start, before faust starts the
    consumer's thread: a scrape then raised ConsumerNotStarted, logged with a traceback."""
    app = create_app(load_settings({"KAPPA_STATE_DIR": str(tmp_path)}), 1)
    assert _FaustSource(app, "orders").assigned() == set()
