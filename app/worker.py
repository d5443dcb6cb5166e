"""The live worker: a Faust app that hands batches of raw records to `PipelineRunner`s.

Faust owns the consumer group, rebalancing, offset commits and the web server; Kappa's part
stays thin. Records are consumed as raw bytes (decoding is the pipeline's job, so a bad record
reaches the DLQ instead of killing anything) and delivered in batches by the conductor in
`app.batch_delivery`, below faust's per-event stream path. faust's `expires`/`on_window_close`
and its Table are not used: windows close on stream time, never on the wall clock.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any

import faust
from faust.exceptions import ConsumerNotStarted
from faust.tables import TableManager
from faust.types import TP

from agents.base import Pipeline, SourceRecord
from app import metrics
from app.batch_buffer import BatchBuffer
from app.batch_delivery import BatchTopic, KappaApp, ack_offsets, consumer_idle_s
from app.batch_producer import OwnProducerSender, TransactionalSender
from app.chaos import hang_on_stop_if_asked
from app.collector import tune_for_batches
from app.consumer_lag import source_lag
from app.group_wait import GroupWait, warn_after_s
from app.kafka_runner import (
    StopDeadline,
    close_on_stop,
    kafka_pipeline_runner,
    send_held_on_stop,
    stop_if_gone,
)
from app.log_repeats import limit_repeats
from app.partition_owners import PartitionOwners, advertised_url
from app.pipeline_driver import PipelineDriver, revoke_all
from app.readiness import PipelinePartitions
from app.runtime import (
    PRODUCER_BATCH_BYTES,
    GapReader,
    PipelineRunner,
)
from app.settings import Settings
from app.state_guard import local_source_partitions
from app.topic_reader import read_range, to_source_record
from app.topology import Topology
from app.web import register_pages
from tables.rocks import StateError

log = logging.getLogger(__name__)
# How long the event loop keeps turning after the worker's services stopped, before it closes
# (s): for the close callbacks they scheduled.
LOOP_CLOSE_GRACE_S = 0.05


# Longest interval between two heartbeats (s). A heartbeat is also how a member learns that a
# rebalance began, so every member's pause for a rebalance waits for the slowest one's next.
MAX_HEARTBEAT_INTERVAL_S = 1.0


def heartbeat_interval_s(session_timeout_ms: int) -> float:
    """At most a third of the session timeout (a member outlives two lost heartbeats), and
    at most `MAX_HEARTBEAT_INTERVAL_S`: with the 10 s default, a third would keep a rebalance
    waiting up to 3.3 s for each member to notice it."""
    return max(min(session_timeout_ms / 3000, MAX_HEARTBEAT_INTERVAL_S), 0.1)


class PromptTableManager(TableManager):  # type: ignore[misc]
    """faust's table manager without its 1 s wait at start-up, which gave faust tables declared
    late the time to register. Kappa keeps no faust tables (its state is its own), so the
    wait only delayed every worker's subscription. Keep in step with faust-streaming's
    `TableManager.on_start` when upgrading (pinned in pyproject)."""

    async def on_start(self) -> None:
        if not self.should_stop:
            await self._update_channels()
            await self.recovery.start()


class BoundedStopWorker(faust.Worker):  # type: ignore[misc]
    """faust's Worker with a deadline on its orderly shutdown: once told to stop (SIGTERM,
    Ctrl-C) it exits after `stop_timeout_s` even if a service's shutdown hangs.

    A supervisor would kill it anyway (Kubernetes after its 30 s grace period); exiting first,
    and saying why, is kinder. Exiting mid-shutdown is safe: outputs are acknowledged before
    each batch's state commits, so a batch cut short is redone on restart, exactly (what
    `make chaos` checks with kill -9 at any point).
    """

    def __init__(
        self, *args: Any, stop_timeout_s: float, stop_on_error: StopOnError, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        if not _is_terminal(self.stdout):
            # faust's start-up spinner writes its cursor and backspace sequences even to a
            # file (`kappa worker > w.log`, the demo's worker.log); it spins only on a terminal
            self.spinner = None
        self.stop_timeout_s = stop_timeout_s
        self.stop_on_error = stop_on_error
        self._deadline: threading.Timer | None = None

    def _schedule_shutdown(self, signal: Any) -> None:  # mode's handler for SIGTERM/SIGINT
        super()._schedule_shutdown(signal)
        if self._deadline is None:
            self._deadline = threading.Timer(self.stop_timeout_s, self._exit_after_deadline)
            self._deadline.daemon = True
            self._deadline.start()

    async def _sentinel_task(self) -> None:
        """mode waits 1 s here before it closes the loop, with every task already done and
        cancelled: a second added to every stop and restart. Callbacks scheduled by the
        services' close (transports, the web server) need a few turns of the loop, not that."""
        await asyncio.sleep(LOOP_CLOSE_GRACE_S)

    def _exit_after_deadline(self) -> None:
        print(
            "kappa worker: shutdown did not finish within KAPPA_SHUTDOWN_TIMEOUT_MS; exiting "
            "now (nothing is lost: a batch cut short is redone on restart)",
            file=sys.stderr,
            flush=True,
        )
        os._exit(self.stop_on_error.exit_code)


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


class FetchLoopStalled(RuntimeError):
    """The consumer went without a poll for the max poll interval and left its group."""


def fetch_loop_stalled(idle_s: float | None, settings: Settings) -> FetchLoopStalled | None:
    """Past `KAPPA_MAX_POLL_INTERVAL_MS` without a poll (the fetch loop itself held up: a
    pipeline that takes no records holds back only its source), aiokafka leaves the group and,
    as faust never fetches again until it is assigned partitions, never rejoins: the worker
    would sit idle. It stops instead, with this reason, for its supervisor to restart it."""
    limit_s = settings.max_poll_interval_ms / 1000
    if idle_s is None or idle_s < limit_s:
        return None
    return FetchLoopStalled(
        f"the worker went {idle_s:.0f}s without polling its consumer, past "
        f"KAPPA_MAX_POLL_INTERVAL_MS={settings.max_poll_interval_ms}, so it left its consumer "
        "group and cannot rejoin; stopping"
    )


class StopOnError:
    """Stops the worker on an error it can say in one line (the broker lost its data, local
    state it cannot use, a newer producer fenced it): the orderly stop a SIGTERM makes, then
    exit code 1. mode's `crash` would log the error again with a traceback, and stopping
    a crashed consumer thread logs another."""

    def __init__(self) -> None:
        self.reason: BaseException | None = None

    async def __call__(self, reason: BaseException, line: str) -> None:
        """Say `line` and stop. Only the first reason is an ERROR line: the others (pipelines
        failing on the same cause, such as their changelogs all gone) are said at INFO."""
        if self.reason is None:
            self.reason = reason
            log.error("kappa worker: %s", line)
            os.kill(os.getpid(), signal.SIGTERM)
        else:  # the stop is under way
            log.info("kappa worker: also: %s", line)

    @property
    def exit_code(self) -> int:
        return 0 if self.reason is None else 1


def create_app(
    settings: Settings,
    version: int,
    pipelines: list[str] | None = None,
    since_ms: int | None = None,
) -> KappaApp:
    """The worker's Faust app for one version; `since_ms` is the version's own (a version
    replayed with `--since` counts only windows starting then or later, live as in replay)."""
    topology = Topology(settings, version, since_ms=since_ms).select(pipelines or [])
    try:
        (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a file in its place, no permission
        raise StateError(
            f"cannot create {settings.state_dir / 'faust'} for the worker: {e.strerror}"
        ) from None
    app = KappaApp(
        topology.group_id,
        broker=[f"kafka://{b}" for b in settings.bootstrap],
        broker_credentials=settings.kafka.faust_credentials(),
        store="memory://",
        TableManager=PromptTableManager,
        autodiscover=False,
        web_enabled=True,
        # faust's own /router and /table pages know nothing of Kappa's state (it keeps no faust
        # tables): they answered 500 with a traceback, or a misleading 503.
        web_router_enabled=False,
        web_tables_enabled=False,
        web_host=f"[{settings.web_host}]" if ":" in settings.web_host else settings.web_host,
        web_bind=settings.web_host,
        web_port=settings.web_port,
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_ms / 1000,
        broker_rebalance_timeout=settings.rebalance_timeout_ms / 1000,
        broker_max_poll_interval=settings.max_poll_interval_ms / 1000,
        broker_heartbeat_interval=heartbeat_interval_s(settings.session_timeout_ms),
        stream_wait_empty=False,
        producer_acks=-1,
        producer_linger_ms=5,
        producer_max_request_size=16 * 1024 * 1024,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        consumer_max_fetch_size=16 * 1024 * 1024,
        # A poll brings at most a batch's target: a buffer holds under batch_max + a poll. Without
        # a bound a poll returned all that was fetched (16 MiB per partition): 140,000 records
        # in a pipeline's buffer of 20,000, and 850 MiB with 1,000,000 distinct keys.
        broker_max_poll_records=max(settings.batch_max // 4, 1),
        stream_buffer_maxsize=max(settings.batch_max * 2, 4096),
        logging_config=None,
        datadir=str(settings.state_dir / "faust"),
    )
    limit_repeats("aiokafka")  # while the broker is away: a line per kind and 30 s, not per attempt
    app.kappa_stop_on_error = StopOnError()
    app.kappa_topics_gone = stop_if_gone(settings, topology)  # a source deleted under it
    app.kappa_read_committed = settings.exactly_once
    app.kappa_fetch_max_wait_ms = settings.fetch_max_wait_ms
    app.kappa_group_instance_id = settings.group_instance_id or None
    app.kappa_partition_owners = PartitionOwners(
        advertised_url(settings.web_host, settings.web_port, settings.advertised_url)
    )
    # A static member restarted in time gets its partitions back without a rebalance, if it
    # rejoins with the join metadata it last joined with: state opened since would change it.
    if app.kappa_group_instance_id is None:
        app.kappa_local_state = partial(local_source_partitions, topology)
    runners: list[PipelineRunner] = []
    drivers: list[tuple[str, PipelineDriver]] = []  # (physical source, its driver)

    senders: list[OwnProducerSender | TransactionalSender] = []
    for pipeline in topology.pipelines:
        if settings.exactly_once:
            sender: OwnProducerSender | TransactionalSender = TransactionalSender(
                settings.kafka, f"{topology.group_id}-{pipeline.name}", settings.copy_max_bytes
            )
        else:
            sender = OwnProducerSender(settings.kafka, settings.copy_max_bytes)
        senders.append(sender)
        source = topology.physical(pipeline.source)
        runner = kafka_pipeline_runner(
            settings, topology, pipeline, sender, _gap_reader(settings, source)
        )
        runners.append(runner)
        driver = _register_batch_pipeline(app, topology, pipeline, runner, settings, sender.release)
        drivers.append((topology.physical(pipeline.source), driver))

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: object, revoked: set[TP], **kwargs: object) -> None:
        stalled = fetch_loop_stalled(consumer_idle_s(app), settings)
        await revoke_all(
            [driver for _, driver in drivers],
            [{tp.partition for tp in revoked if tp.topic == source} for source, _ in drivers],
        )
        if stalled is not None:
            await app.kappa_stop_on_error(stalled, str(stalled))

    app.task(freeze_startup_heap)
    # said in the log when the worker stays out of its group, and on /ready for how long
    app.kappa_group_wait = GroupWait(
        topology.group_id,
        warn_after_s(settings.session_timeout_ms, settings.rebalance_timeout_ms),
        app.kappa_join_answers,
    )
    app.kappa_group_check_s = heartbeat_interval_s(settings.session_timeout_ms)

    closing_fenced: list[asyncio.Future[None]] = []

    async def close_when_fenced() -> None:
        """Fenced (another process has this one's group instance id): its partitions, and
        the changelog partitions it writes their state to, are that process's now, which
        restores from them. So nothing more is sent: no send starts from here on, one under
        way fails as `SenderClosed` (its batch is the other process's to read), and the stop
        sends no held changelog entries and hands nothing over. Returns once the requests
        already on their way are answered, or the close was cut past its deadline."""
        for sender in senders:
            sender.close_at_once()
        closing_fenced.append(asyncio.ensure_future(close_senders_on_stop(senders)))
        await asyncio.wait(closing_fenced)

    app.kappa_on_fenced = close_when_fenced

    @app.on_before_shutdown.connect
    async def close_senders(app: faust.App, **kwargs: object) -> None:
        await hang_on_stop_if_asked()
        if closing_fenced:  # fenced: closing already, with nothing held sent
            await closing_fenced[0]
            return
        await finish_and_send_held([d for _, d in drivers], runners)
        await close_senders_on_stop(senders)

    def partitions() -> dict[str, PipelinePartitions]:
        return {
            d.name: PipelinePartitions(d.consumer.assigned(), d.runner.open_partitions())
            for _, d in drivers
        }

    def lags() -> dict[str, dict[int, int]]:
        return {d.name: source_lag(d.consumer, _applied_offset_of(d.runner)) for _, d in drivers}

    register_pages(app, version, topology.group_id, runners, settings, partitions, lags)
    app.kappa_runners = runners
    return app


async def finish_and_send_held(
    drivers: Sequence[PipelineDriver], runners: Sequence[PipelineRunner]
) -> None:
    """On stop, before the senders close: the batches under way (finished, or cancelled past
    their deadline), then what is held, each step within its own deadline (a batch that runs
    its deadline out must not leave the held entries of every pipeline no time)."""
    await asyncio.gather(*(d.finish_batch() for d in drivers))
    await send_held_on_stop(runners, StopDeadline())


async def close_senders_on_stop(senders: Sequence[OwnProducerSender | TransactionalSender]) -> None:
    """Stop the senders' producers at once, within a deadline of their own (`close_on_stop`):
    a producer still waiting for a broker that does not answer must not hold the stop up to
    aiokafka's request timeout, each in turn."""
    await close_on_stop([s.close for s in senders], "closing the producers", at_stop=True)


async def freeze_startup_heap() -> None:
    """Runs once faust has started: from here on the heap grows only by per-batch garbage
    (`app.collector`)."""
    tune_for_batches()


def _gap_reader(settings: Settings, topic: str) -> GapReader:
    async def read(partition: int, start: int, end: int) -> AsyncIterator[list[SourceRecord]]:
        async for chunk in read_range(settings.kafka, topic, partition, start, end):
            yield [to_source_record(r) for r in chunk]

    return read


def _register_batch_pipeline(
    app: KappaApp,
    topology: Topology,
    pipeline: Pipeline,
    runner: PipelineRunner,
    settings: Settings,
    release: Callable[[set[int]], Awaitable[None]],
) -> PipelineDriver:
    """Subscribe the pipeline's source with batch delivery and start the task that drains it.
    `release`: what the sender lets go of for revoked source partitions.

    Whatever is buffered when a batch is taken forms the batch: under load batches grow (up to
    the buffer bound), idle they are a single record, so latency stays low without a timer.
    """
    source = topology.physical(pipeline.source)
    topic = BatchTopic(
        app,
        topics=[source],
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    topic.buffer = buffer = BatchBuffer(settings.batch_max, target=settings.batch_max // 4)
    app.topics.add(topic)
    app.kappa_batch_buffers[source] = buffer
    app.kappa_source_held[source] = held = metrics.SOURCE_HELD.labels(
        pipeline.name, str(topology.version)
    )
    held.set(0)  # exported from the start, for alerts
    driver = PipelineDriver(
        runner,
        buffer,
        _FaustSource(app, source),
        linger_s=settings.batch_linger_ms / 1000,
        revoke_deadline_s=settings.rebalance_timeout_ms / 2000,
        release=release,
        # looked up when called (tests replace it)
        fail=lambda exc, line: app.kappa_stop_on_error(exc, line),
        crash=lambda exc: app.crash(exc),
        should_stop=lambda: bool(app.should_stop),
    )

    async def drain() -> None:
        await driver.drain()

    drain.__name__ = drain.__qualname__ = f"kappa_{pipeline.name.replace('-', '_')}"
    app.task(drain)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: object, assigned: set[TP], **kwargs: object) -> None:
        driver.on_assigned({tp.partition for tp in assigned if tp.topic == source})

    return driver


def _applied_offset_of(runner: PipelineRunner) -> Callable[[int], int | None]:
    """The last offset applied to a partition's open state (None: not open here)."""

    def applied(partition: int) -> int | None:
        state = runner.open_state(partition)
        return None if state is None else state.applied_offset

    return applied


class _FaustSource:
    """faust's consumer, seen from one source topic (`SourceConsumer`)."""

    def __init__(self, app: faust.App, topic: str) -> None:
        self.app, self.topic = app, topic

    def highwater(self, partition: int) -> int | None:
        """None until a fetch response told it, and for a partition not assigned here: a
        scrape of `/metrics` can race a rebalance (aiokafka asserts the assignment, and has
        none while it rejoins)."""
        try:
            return self.app.consumer.highwater(TP(self.topic, partition))  # type: ignore[no-any-return]
        except (AssertionError, AttributeError, ConsumerNotStarted):
            return None

    def assigned(self) -> set[int]:
        """Nothing before the consumer's thread starts: `/metrics` and `/ready` ask from the
        web server's start on, and faust raises then."""
        try:
            assignment = self.app.consumer.assignment()
        except ConsumerNotStarted:
            return set()
        return {tp.partition for tp in assignment if tp.topic == self.topic}

    def ack(self, partition: int, offsets: list[int]) -> None:
        ack_offsets(self.app.consumer, TP(self.topic, partition), offsets)
