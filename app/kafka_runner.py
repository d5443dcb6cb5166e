"""A `PipelineRunner` wired to Kafka for the settings' processing guarantee.

The worker and the replay build their runners here, so both run a pipeline the same way:
what replay equals live rests on (one produce request per cycle and changelog entries held
for the next one under at_least_once; one transaction per source partition, its previous
owner fenced before the state is opened, under exactly_once).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka.errors import KafkaError

from agents.base import Pipeline
from app.admin import existing_topics
from app.batch_producer import BatchSender, OwnProducerSender, TransactionalSender, retrying
from app.changelog import KafkaChangelog
from app.runtime import GapReader, PipelineRunner
from app.send_refusals import SendRefused
from app.settings import Settings
from app.state_guard import TopicsCheck, topic_gone
from app.topology import Topology
from tables.rocks import StateError

log = logging.getLogger(__name__)
T = TypeVar("T")

# On stop, how long held changelog entries may take to go out (s); unsent, the batches they
# belong to are read again from the source on restart.
HELD_SEND_ON_STOP_S = 5.0


class StopDeadline:
    """How long one step of a stop (the batch under way; the held changelog entries; the
    producers' close) may take, counted from the first time it is asked for. Each step has
    its own: a batch that runs its deadline out (a restore, a broker not answering) must not
    leave the held entries of the other pipelines no time at all."""

    def __init__(self, budget_s: float | None = None) -> None:
        self.budget_s = HELD_SEND_ON_STOP_S if budget_s is None else budget_s
        self._at: float | None = None

    def remaining_s(self) -> float:
        now = asyncio.get_running_loop().time()
        if self._at is None:
            self._at = now + self.budget_s
        return max(0.0, self._at - now)


async def finish_on_stop(
    work: Awaitable[T], deadline: StopDeadline, what: str = "the batch under way at the stop"
) -> T:
    """Await `work`; cancelled (a stop), let it finish first, within `deadline`, then go on
    with the cancel. A batch whose outputs are on their way is so made durable, rather than
    read again on resume, writing its DLQ and late copies twice. Past the deadline (a broker
    that does not answer) it is cancelled, and read again. The replay's stages and the
    worker's drain loops (`PipelineDriver`) both await their batches so."""
    task = asyncio.ensure_future(work)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        await end_within(task, deadline, what)
        raise


async def end_within(
    task: asyncio.Future[Any], deadline: StopDeadline, what: str, at_stop: bool = True
) -> None:
    """Wait for `task`, a step of a stop (or of an end: not `at_stop`, which only words the
    warning), within `deadline`; past it, or cancelled meanwhile (a second stop), cancel it
    and wait for it to end. Its failure is said in one line, not raised (the stop goes on),
    so it is never left unretrieved."""
    try:
        if not task.done():  # done (cancelled by someone else): the deadline is not started
            await asyncio.wait({task}, timeout=deadline.remaining_s())
        if not task.done():
            since = " of the stop" if at_stop else ""
            log.warning("%s did not end within %gs%s; cancelled", what, deadline.budget_s, since)
    finally:  # past the deadline, or cancelled again (a second stop): it ends here too
        if not task.done():
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.warning("%s failed (%r)", what, task.exception())


def stopping() -> bool:
    """Whether the task running is on its way out of a stop (cancelled: Ctrl-C, SIGTERM, or
    a stage beside it failed), rather than at its end."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def close_on_stop(
    closes: Sequence[Callable[[], Awaitable[None]]],
    what: str,
    deadline: StopDeadline | None = None,
    at_stop: bool | None = None,
) -> None:
    """Close clients at once, within one deadline (its own `HELD_SEND_ON_STOP_S` unless
    given). `closes` are their close functions (`producer.stop`), called only once the close's
    task runs: a second stop before then leaves no coroutine never awaited. aiokafka's
    `producer.stop()` waits for the requests in flight, up to its request timeout (40 s)
    against a broker that does not answer; past the deadline the close is cut and they are
    left to the process's end. In the worker and the replay nothing is lost: a record is in
    flight only if the batch it belongs to was not acknowledged, so its state was not
    committed and it is read again on restart. At a normal end every batch was acknowledged,
    so a close has nothing left to deliver: bounded there too, a broker gone quiet since holds
    no exit up for 40 s. `at_stop` only words the warning (None: `stopping()`)."""

    async def close_one(close: Callable[[], Awaitable[None]]) -> None:
        try:
            await close()
        except Exception as e:  # said as it fails, even while another close hangs
            log.warning("%s failed (%r)", what, e)

    async def close_all() -> None:
        await asyncio.gather(*map(close_one, closes))  # the others are closed all the same

    if at_stop is None:
        at_stop = stopping()
    if closes:
        task = asyncio.ensure_future(close_all())
        await end_within(task, deadline or StopDeadline(), what, at_stop)


def kafka_pipeline_runner(
    settings: Settings,
    topology: Topology,
    pipeline: Pipeline,
    sender: BatchSender | OwnProducerSender | TransactionalSender,
    read_gap: GapReader | None = None,
) -> PipelineRunner:
    """`sender` is transactional exactly when the settings say exactly_once; its sends are
    retried until they succeed or are refused for good (`retrying`)."""
    transactional = isinstance(sender, TransactionalSender)
    if transactional != settings.exactly_once:
        raise ValueError(f"{type(sender).__name__} is not {settings.processing_guarantee}")
    return PipelineRunner(
        pipeline,
        topology,
        retrying(
            sender.send,
            (pipeline.name, str(topology.version)),
            topics_gone=stop_if_gone(settings, topology),
            closed=lambda: getattr(sender, "closed", False),  # a replay's BatchSender: never
        ),
        read_gap,
        KafkaChangelog(settings.kafka, topology.changelog(pipeline)),
        one_request=not transactional,
        hold_changelog=not transactional,
        before_open=sender.fence if isinstance(sender, TransactionalSender) else None,
    )


def stop_if_gone(settings: Settings, topology: Topology) -> TopicsCheck:
    """The check a send or an offset commit the broker answered with UnknownTopicOrPartition
    gets: a topic missing from the broker's list stops the worker in one line (Kappa's clients
    never recreate it); if the list cannot be read, or has them all, it is retried."""

    async def check(topics: set[str]) -> None:
        try:
            there = await existing_topics(settings.kafka)
        except (KafkaError, OSError, TimeoutError):
            return
        if gone := sorted(topics - there):
            raise topic_gone(gone[0], topology)

    return check


async def send_held_on_stop(
    runners: Sequence[PipelineRunner], deadline: StopDeadline | None = None
) -> None:
    """Send every pipeline's held changelog entries at once, within one deadline (a broker
    that does not answer costs `HELD_SEND_ON_STOP_S` in all, not per pipeline). Best effort: a
    batch whose entries did not go out is read again from the source on restart."""
    timeout_s = (deadline or StopDeadline()).remaining_s()

    async def send(runner: PipelineRunner) -> None:
        try:
            await asyncio.wait_for(runner.send_held(), timeout_s)
        except (TimeoutError, KafkaError, OSError, StateError, SendRefused) as e:
            log.warning("%s: held changelog entries not sent on stop (%r)", runner.pipeline.name, e)
        runner.stop_sending_held()

    await asyncio.gather(*(send(r) for r in runners))
