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
import sys
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import faust
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError, ProducerFenced
from aiokafka.partitioner import DefaultPartitioner
from faust.types import TP
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agents.base import Pipeline, SourceRecord
from agents.user_state import decode_parts
from agents.user_totals import TABLE as USER_TOTALS_TABLE
from agents.user_totals import totals as user_totals
from app.batch_delivery import BatchBuffer, BatchTopic, KappaApp, ack_offsets
from app.batch_producer import OwnProducerSender, TransactionalSender
from app.changelog import KafkaChangelog
from app.collector import tune_for_batches
from app.runtime import (
    PRODUCER_BATCH_BYTES,
    BrokerDataLost,
    PipelineRunner,
    Sender,
    retrying,
)
from app.settings import Settings
from app.topic_reader import read_range, to_source_record
from app.topology import Topology
from tables.rocks import StateError

log = logging.getLogger(__name__)
# On stop, how long held changelog entries may take to go out (s); unsent, the batches they
# belong to are read again from the source on restart.
HELD_SEND_ON_STOP_S = 5.0


class BoundedStopWorker(faust.Worker):  # type: ignore[misc]
    """faust's Worker with a deadline on its orderly shutdown: once told to stop (SIGTERM,
    Ctrl-C) it exits after `stop_timeout_s` even if a service's shutdown hangs.

    A supervisor would kill it anyway (Kubernetes after its 30 s grace period); exiting first,
    and saying why, is kinder. Exiting mid-shutdown is safe: outputs are acknowledged before
    each batch's state commits, so a batch cut short is redone on restart, exactly (what
    `make chaos` checks with kill -9 at any point).
    """

    def __init__(self, *args: Any, stop_timeout_s: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stop_timeout_s = stop_timeout_s
        self._deadline: threading.Timer | None = None

    def _schedule_shutdown(self, signal: Any) -> None:  # mode's handler for SIGTERM/SIGINT
        super()._schedule_shutdown(signal)
        if self._deadline is None:
            self._deadline = threading.Timer(self.stop_timeout_s, _exit_after_deadline)
            self._deadline.daemon = True
            self._deadline.start()


def _exit_after_deadline() -> None:
    print(
        "kappa worker: shutdown did not finish within KAPPA_SHUTDOWN_TIMEOUT_MS; exiting now "
        "(nothing is lost: a batch cut short is redone on restart)",
        file=sys.stderr,
        flush=True,
    )
    os._exit(0)


def create_app(
    settings: Settings,
    version: int,
    pipelines: list[str] | None = None,
    since_ms: int | None = None,
) -> faust.App:
    """The worker's Faust app for one version; `since_ms` is the version's own (a version
    replayed with `--since` counts only windows starting then or later, live as in replay)."""
    topology = Topology(settings, version, since_ms=since_ms).select(pipelines or [])
    (settings.state_dir / "faust").mkdir(parents=True, exist_ok=True)
    app = KappaApp(
        topology.group_id,
        broker=[f"kafka://{b}" for b in settings.bootstrap],
        broker_credentials=settings.kafka.faust_credentials(),
        store="memory://",
        autodiscover=False,
        web_enabled=True,
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
        broker_heartbeat_interval=max(settings.session_timeout_ms / 3000, 0.1),
        stream_wait_empty=False,
        producer_acks=-1,
        producer_linger_ms=5,
        producer_max_request_size=16 * 1024 * 1024,
        producer_max_batch_size=PRODUCER_BATCH_BYTES,
        consumer_max_fetch_size=16 * 1024 * 1024,
        stream_buffer_maxsize=max(settings.batch_max * 2, 4096),
        logging_config=None,
        datadir=str(settings.state_dir / "faust"),
    )
    app.conf.kappa_topology = topology  # type: ignore[attr-defined]
    app.kappa_batch_buffers = {}  # type: ignore[attr-defined]
    app.conf.kappa_read_committed = settings.exactly_once  # type: ignore[attr-defined]
    app.conf.kappa_fetch_max_wait_ms = settings.fetch_max_wait_ms  # type: ignore[attr-defined]
    runners: list[PipelineRunner] = []

    senders: list[OwnProducerSender | TransactionalSender] = []
    for pipeline in topology.pipelines:
        if settings.exactly_once:
            sender: OwnProducerSender | TransactionalSender = TransactionalSender(
                settings.kafka, f"{topology.group_id}-{pipeline.name}", settings.copy_max_bytes
            )
        else:
            sender = OwnProducerSender(settings.kafka, settings.copy_max_bytes)
        senders.append(sender)
        send: Sender = sender.send
        runner = PipelineRunner(
            pipeline,
            topology,
            retrying(send, (pipeline.name, str(version))),
            _gap_reader(settings, topology.physical(pipeline.source)),
            KafkaChangelog(settings.kafka, topology.changelog(pipeline)),
            one_request=not settings.exactly_once,
            hold_changelog=not settings.exactly_once,
        )
        runners.append(runner)
        _register_batch_pipeline(app, topology, pipeline, runner, settings, sender.release)

    app.task(freeze_startup_heap)

    @app.on_before_shutdown.connect
    async def close_senders(app: faust.App, **kwargs: object) -> None:
        if os.environ.get("KAPPA_CHAOS_HANG_ON_STOP"):  # fault injection for tests
            await asyncio.Event().wait()
        await send_held_on_stop(runners, HELD_SEND_ON_STOP_S)
        for sender in senders:
            await sender.close()

    @app.page("/metrics")
    class Metrics(View):
        async def get(self, request: Request) -> Response:
            return self.bytes(generate_latest(), content_type=CONTENT_TYPE_LATEST.split(";")[0])

    @app.page("/health")
    class Health(View):
        async def get(self, request: Request) -> Response:
            return self.json({"status": "ok", "version": version, "group": topology.group_id})

    totals_runner = next((r for r in runners if r.pipeline.name == "user-totals"), None)
    if totals_runner is not None:
        _register_user_totals_query(app, totals_runner, settings)

    app.kappa_runners = runners  # type: ignore[attr-defined]
    return app


async def send_held_on_stop(runners: Sequence[PipelineRunner], timeout_s: float) -> None:
    """Send every pipeline's held changelog entries at once, within one deadline (a broker
    that does not answer costs `timeout_s` in all, not per pipeline). Best effort: a batch
    whose entries did not go out is read again from the source on restart."""

    async def send(runner: PipelineRunner) -> None:
        try:
            await asyncio.wait_for(runner.send_held(), timeout_s)
        except (TimeoutError, KafkaError, OSError, StateError) as e:
            log.warning("%s: held changelog entries not sent on stop (%r)", runner.pipeline.name, e)
        runner.stop_sending_held()

    await asyncio.gather(*(send(r) for r in runners))


async def freeze_startup_heap() -> None:
    """Runs once faust has started: from here on the heap grows only by per-batch garbage
    (`app.collector`)."""
    tune_for_batches()


def _register_user_totals_query(app: faust.App, runner: PipelineRunner, settings: Settings) -> None:
    """`GET /tables/user-totals/{user_id}`: the user's totals from this worker's state.

    Read-only, served from the partition's RocksDB state when this worker holds it (a user's
    partition is the Kafka default partitioner's over its key, as for every keyed record);
    otherwise 404 naming the partition, so a caller can ask the worker that owns it.
    """
    partitioner = DefaultPartitioner()
    partitions = list(range(settings.partitions))

    @app.page("/tables/user-totals/{user_id:.+}")  # any id, "{", "}" and "/" included
    class UserTotals(View):
        async def get(self, request: Request, user_id: str) -> Response:
            partition = partitioner(user_id.encode(), partitions, partitions)
            state = runner.open_state(partition)
            if state is None:
                return self.json(
                    {"error": f"partition {partition} of this user is not on this worker"},
                    status=404,
                )
            raw = state.settled_values(USER_TOTALS_TABLE, [user_id])[0]
            if raw is None:
                return self.json({"error": f"no orders for user {user_id}"}, status=404)
            orders, spend, _ = user_totals(decode_parts(raw))
            return self.json(
                {"user_id": user_id, "orders": orders, "spend": spend, "partition": partition}
            )


def _gap_reader(settings: Settings, topic: str):
    async def read(partition: int, start: int, end: int) -> AsyncIterator[list[SourceRecord]]:
        async for chunk in read_range(settings.kafka, topic, partition, start, end):
            yield [to_source_record(r) for r in chunk]

    return read


_opening: set[asyncio.Future[None]] = set()  # strong references to open_assigned tasks


def _register_batch_pipeline(
    app: faust.App,
    topology: Topology,
    pipeline: Pipeline,
    runner: PipelineRunner,
    settings: Settings,
    release: Callable[[set[int]], Awaitable[None]],
) -> None:
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
    linger_s = settings.batch_linger_ms / 1000
    app.topics.add(topic)
    app.kappa_batch_buffers[source] = buffer  # type: ignore[attr-defined]
    lock = asyncio.Lock()

    async def process(taken: dict[int, list[ConsumerRecord]]) -> None:
        highwater = app.consumer.highwater
        for partition in taken:
            await runner.check_log_kept(partition, highwater(TP(source, partition)))
        await runner.handle_many(taken)  # one produce round trip for all partitions
        for partition, records in taken.items():
            ack_offsets(app.consumer, TP(source, partition), [r.offset for r in records])

    async def process_with_retry(taken: dict[int, list[ConsumerRecord]]) -> None:
        """Broker trouble (unreachable, restarting) is waited out with backoff. Retrying the
        whole batch is safe: records already applied are skipped, and state is committed only
        after its outputs were acknowledged."""
        delay = 0.2
        while True:
            try:
                await process(taken)
                return
            except ProducerFenced:  # another worker owns these partitions now: a zombie stops
                raise
            except (TimeoutError, KafkaError, OSError) as e:
                log.warning(
                    "%s: broker trouble (%s); retrying in %.1fs",
                    pipeline.name,
                    type(e).__name__,
                    delay,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def drain() -> None:
        try:
            while not app.should_stop:
                if not buffer.size:  # idle: the last batch's changelog need not wait
                    runner.send_held_soon()
                await buffer.wait_for_batch(linger_s)
                async with lock:
                    await process_with_retry(buffer.take())
        except asyncio.CancelledError:
            raise
        except (BrokerDataLost, StateError) as exc:  # said in one line, no traceback
            log.error("kappa worker: %s", exc)
            await app.crash(exc)
        except Exception as exc:  # a bug, not bad data (that goes to the DLQ): stop loudly
            log.exception("pipeline %s failed", pipeline.name)
            await app.crash(exc)

    drain.__name__ = drain.__qualname__ = f"kappa_{pipeline.name.replace('-', '_')}"
    app.task(drain)
    rebalances = 0  # revokes seen: an open scheduled before the latest one is stale

    async def open_assigned(parts: set[int], scheduled_at: int) -> None:
        """Open (restoring where the changelog is ahead) the states of assigned partitions
        before their first record: queries answer at once after a restart or a rebalance,
        not only once each partition gets new input."""
        try:
            async with lock:
                if scheduled_at != rebalances:
                    return
                owned = {tp.partition for tp in app.consumer.assignment() if tp.topic == source}
                for partition in sorted(parts & owned):
                    await runner.state(partition)
        except asyncio.CancelledError:
            raise
        except (BrokerDataLost, StateError) as exc:
            log.error("kappa worker: %s", exc)
            await app.crash(exc)
        except (TimeoutError, KafkaError, OSError) as e:  # the first batch opens them instead
            log.warning("%s: assigned partitions not opened yet (%r)", pipeline.name, e)

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: object, assigned: set[TP], **kwargs: object) -> None:
        parts = {tp.partition for tp in assigned if tp.topic == source}
        if parts:  # not awaited: a restore can take long, and the rebalance must not wait
            opening = asyncio.ensure_future(open_assigned(parts, rebalances))
            _opening.add(opening)
            opening.add_done_callback(_opening.discard)

    @app.on_partitions_revoked.connect
    async def on_revoked(sender: object, revoked: set[TP], **kwargs: object) -> None:
        """Finish what was delivered for the revoked partitions, then let them go."""
        nonlocal rebalances
        rebalances += 1
        parts = {tp.partition for tp in revoked if tp.topic == source}
        if not parts:
            return
        async with lock:
            try:
                await process_with_retry(buffer.take(parts))
                await runner.hand_over(parts)
            except ProducerFenced as exc:
                log.error("kappa worker: %s: fenced by a newer producer; stopping", pipeline.name)
                await app.crash(exc)
                return
            await release(parts)
