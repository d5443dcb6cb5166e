"""A worker refused its consumer group by the broker, for a reason retrying cannot change,
stops in one line naming what to change.

Apache Kafka answers a member's JoinGroup, SyncGroup or Heartbeat so when its session timeout
is outside the broker's bounds (INVALID_SESSION_TIMEOUT), its principal may not read the
group (GROUP_AUTHORIZATION_FAILED; its FindCoordinator gets that first if it may not even
describe the group), the group id is not one (INVALID_GROUP_ID), the group's other members
share no partition assignor with it (INCONSISTENT_GROUP_PROTOCOL) or the group is full
(GROUP_MAX_SIZE_REACHED). The Java consumer, so Kafka Streams, fails on them. aiokafka 0.14
takes them as fatal too, but leaves them for the consumer's next fetch to raise, and faust
fetches only once the worker is in its group: a refused lookup or join left the worker
joining for ever behind a healthy /health, and a refused heartbeat crashed it with a
traceback. Here the first such answer stops the worker in one line; the refused request and
every later lookup, join, sync and heartbeat wait for the consumer to close and fail unsent,
so aiokafka neither handles the answer nor joins again.

Any other error code in those answers that aiokafka does not handle there (UNKNOWN_SERVER_ERROR,
which Kafka answers for a failure of its own, INVALID_REQUEST, UNSUPPORTED_VERSION, a
REQUEST_TIMED_OUT, ...) stops the worker so too: aiokafka left a join's, sync's or lookup's
for that fetch as well, and raised a heartbeat's from it, where the Java consumer fails on
them (KafkaException). A lookup answered a retriable error is retried by aiokafka, and left to
it. A JoinGroup answered REBALANCE_IN_PROGRESS (Kafka's answer when writing the group's new
state timed out) is retried after the backoff, as the Java consumer retries it: aiokafka left
it for that fetch too.

An OffsetCommit is answered per partition: GROUP_AUTHORIZATION_FAILED (every partition's, on
Kafka) or TOPIC_AUTHORIZATION_FAILED (a topic the principal may not read) crashed faust's
commit with a traceback. They stop the worker the same way; that commit returns without
committing, as does one under way when any refusal comes (faust awaits it before the consumer
closes, on stop too), and the worker commits nothing more. UNKNOWN_MEMBER_ID,
ILLEGAL_GENERATION and REBALANCE_IN_PROGRESS are no refusal: a rebalance, or a replaced static
member (`app.group_fence`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from aiokafka.errors import KafkaError, for_code  # type: ignore[import-untyped]
from aiokafka.protocol.commit import OffsetCommitRequest  # type: ignore[import-untyped]
from aiokafka.protocol.coordination import FindCoordinatorRequest  # type: ignore[import-untyped]
from aiokafka.protocol.group import (  # type: ignore[import-untyped]
    HeartbeatRequest,
    JoinGroupRequest,
    SyncGroupRequest,
)

from app.group_fence import COORDINATOR_LOG, FENCED_INSTANCE_ID, QUIET_ONCE_STOPPING

# Kafka's error code → (its name, what the broker refuses, what to change). `{group}`: the
# consumer group; `{session_timeout_ms}`: the member's session timeout (ms).
REFUSALS: dict[int, tuple[str, str, str]] = {
    23: (
        "INCONSISTENT_GROUP_PROTOCOL",
        "the other members of consumer group {group} share no partition assignor with this "
        "worker (sticky)",
        "stop them before starting it (workers of a Kappa before 2026-11-22 assign "
        "round-robin; or another application uses the group)",
    ),
    24: (
        "INVALID_GROUP_ID",
        "the broker refuses {group} as a consumer group id",
        "set another KAPPA_APP_ID (a version's group is KAPPA_APP_ID-vN)",
    ),
    26: (
        "INVALID_SESSION_TIMEOUT",
        "the broker refuses KAPPA_SESSION_TIMEOUT_MS={session_timeout_ms} for consumer group "
        "{group}",
        "set KAPPA_SESSION_TIMEOUT_MS within the broker's group.min.session.timeout.ms and "
        "group.max.session.timeout.ms (6000 to 1800000 by default)",
    ),
    30: (
        "GROUP_AUTHORIZATION_FAILED",
        "the broker refuses consumer group {group} to this client's principal",
        "grant the principal Read on the group (ACLs)",
    ),
    81: (
        "GROUP_MAX_SIZE_REACHED",
        "consumer group {group} has as many members as the broker's group.max.size allows",
        "run fewer worker processes of this version, or raise group.max.size",
    ),
}
GROUP_AUTHORIZATION_FAILED, TOPIC_AUTHORIZATION_FAILED = 30, 29
# The answers aiokafka handles itself, per request, so no refusal: none (0); a rebalance
# (ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, REBALANCE_IN_PROGRESS, MEMBER_ID_REQUIRED: it joins
# again); its coordinator loading or moved (COORDINATOR_LOAD_IN_PROGRESS,
# COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR: it waits, or looks it up again); and a replaced
# static member (FENCED_INSTANCE_ID), which `app.group_fence` stops on. A lookup's retriable
# errors are retried too; a JoinGroup's REBALANCE_IN_PROGRESS is retried here.
REBALANCE_IN_PROGRESS, COORDINATOR_LOAD_IN_PROGRESS = 27, 14
HANDLED: dict[str, frozenset[int]] = {
    "FindCoordinator": frozenset({0}),
    "JoinGroup": frozenset({0, 14, 15, 16, 25, 79, REBALANCE_IN_PROGRESS}),
    "SyncGroup": frozenset({0, 15, 16, 22, 25, 27}),
    "Heartbeat": frozenset({0, 15, 16, 22, 25, 27}),
}
# The member's requests whose answers can refuse it, by the name Kafka gives them.
ASKING = {
    FindCoordinatorRequest: "FindCoordinator",
    JoinGroupRequest: "JoinGroup",
    SyncGroupRequest: "SyncGroup",
    HeartbeatRequest: "Heartbeat",
    OffsetCommitRequest: "OffsetCommit",
}


def _said(name: str, what: str, request: str, change: str, then: str) -> str:
    return f"{what} ({request} answered {name}, not retried): {change}; {then}"


def error_said(error_code: int) -> str:
    """Kafka's name for an error code and the code, as brokers' logs and docs say them."""
    if error_code == -1:  # aiokafka's UnknownError, which it also makes of codes it does not know
        return "UNKNOWN_SERVER_ERROR (-1)"
    name = for_code(error_code).message
    return f"error {error_code}" if name == "UNKNOWN" else f"{name} ({error_code})"


def refusal_line(error_code: int, request: str, group: str, session_timeout_ms: int) -> str | None:
    """The line a worker stops with when the broker answers its `request` (FindCoordinator,
    JoinGroup, SyncGroup, Heartbeat) with `error_code`, if retrying cannot change that
    answer: one of REFUSALS, or any other aiokafka does not handle for that request
    (`HANDLED`, a lookup's retriable errors) and would leave the worker out of its group with;
    else None."""
    refusal = REFUSALS.get(error_code)
    if refusal is None:
        if error_code in HANDLED.get(request, ()) or error_code == FENCED_INSTANCE_ID:
            return None
        if request == "FindCoordinator" and for_code(error_code).retriable:
            return None
        return (
            f"the broker answered {request} for consumer group {group} with "
            f"{error_said(error_code)}, which neither aiokafka nor Kafka's own consumer "
            "retries there: the broker's log may say why; stopping"
        )
    name, what, change = refusal
    what = what.format(group=group, session_timeout_ms=session_timeout_ms)
    return _said(name, what, request, change, "stopping")


def commit_refusal_line(
    answers: Iterable[tuple[str, int]], group: str, then: str = "stopping"
) -> str | None:
    """The line an OffsetCommit answered so stops with, if retrying cannot change the answer;
    else None. `answers`: (topic, error code) of each partition committed; `then`: what
    follows (a worker is stopping)."""
    answers = list(answers)
    if any(code == GROUP_AUTHORIZATION_FAILED for _, code in answers):
        name, what, change = REFUSALS[GROUP_AUTHORIZATION_FAILED]
        return _said(name, what.format(group=group), "OffsetCommit", change, then)
    refused = sorted({topic for topic, code in answers if code == TOPIC_AUTHORIZATION_FAILED})
    if not refused:
        return None
    topics = f"topic {refused[0]}" if len(refused) == 1 else f"topics {', '.join(refused)}"
    what = f"the broker refuses {topics} to this client's principal"
    change = f"grant the principal Read on the {topics.split()[0]} (ACLs)"
    return _said("TOPIC_AUTHORIZATION_FAILED", what, "OffsetCommit", change, then)


def commit_answers(response: Any) -> list[tuple[str, int]]:
    """(topic, error code) of each partition of an OffsetCommit response."""
    return [(topic, code) for topic, partitions in response.topics for _, code in partitions]


class QuietCommitRefusals(logging.Filter):
    """aiokafka's coordinator's ERROR lines for an OffsetCommit refused the group or a topic
    (before it raises GroupAuthorizationFailedError, TopicAuthorizationFailedError): the
    committer says the refusal itself, in the one line `commit_refusal_line` makes."""

    SAID = frozenset(
        {"OffsetCommit failed for group %s - %s", "OffsetCommit failed for unauthorized topics %s"}
    )

    def filter(self, record: logging.LogRecord) -> bool:
        return record.msg not in self.SAID


@contextlib.contextmanager
def quiet_commit_refusals() -> Iterator[None]:
    """Within it, aiokafka does not log the commit refusals its caller says itself."""
    quiet = QuietCommitRefusals()
    COORDINATOR_LOG.addFilter(quiet)
    try:
        yield
    finally:
        COORDINATOR_LOG.removeFilter(quiet)


class GroupRefused(KafkaError):  # type: ignore[misc]
    """What a refused member's group requests fail with, unsent (and why the worker stops)."""


class GroupRefusal:
    """Whether the coordinator refused this member for good. Set by the consumer's thread,
    read by the worker's loop: a `threading.Event`, which loops can also await (`wait`)."""

    def __init__(self) -> None:
        self._refused = threading.Event()
        self._lock = threading.Lock()
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = []

    @property
    def refused(self) -> bool:
        return self._refused.is_set()

    def refuse(self) -> bool:
        """True the first time only: the first refusal is the one said."""
        with self._lock:
            if self._refused.is_set():
                return False
            self._refused.set()
            waiters, self._waiters = self._waiters, []
        for loop, waiter in waiters:
            with contextlib.suppress(RuntimeError):  # its loop has closed: nobody waits
                loop.call_soon_threadsafe(_settle, waiter)
        return True

    async def wait(self) -> None:
        """Until refused, from whichever thread."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        with self._lock:
            if self._refused.is_set():
                return
            self._waiters.append((loop, waiter))
        try:
            await waiter
        finally:
            with self._lock, contextlib.suppress(ValueError):
                self._waiters.remove((loop, waiter))


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def stop_when_refused(
    consumer: Any, refusal: GroupRefusal, on_refused: Callable[[str], None]
) -> None:
    """Make the aiokafka `consumer` (call before it starts) call `on_refused(line)` (from its
    thread) at the first answer to its coordinator lookup, join, sync or heartbeat that
    `refusal_line` names, or to its offset commit that `commit_refusal_line` names; that
    request and every later lookup, join, sync and heartbeat then wait for the consumer to
    close and fail unsent; its `commit` (one under way included) then returns at once without
    committing (faust would crash on the refusal) and commits nothing more; and its
    coordinator's warnings and errors are not logged. Reaches into aiokafka's private client
    and coordinator (pinned in pyproject), as `app.group_fence` does."""
    client = getattr(consumer, "_client", None)
    if client is None or not hasattr(client, "send"):
        return
    send = client.send

    async def unsent(request: Any, line: str) -> Any:
        closing = getattr(getattr(consumer, "_coordinator", None), "_closing", None)
        if isinstance(closing, asyncio.Future):
            await asyncio.shield(closing)  # aiokafka's close cancels its heartbeat task
        if isinstance(request, FindCoordinatorRequest):
            # aiokafka's coordination routine hands a failed lookup to every fetch waiting
            # (`_push_error_to_user`), the one faust left when it stopped fetching included:
            # nothing would retrieve it. Its fetcher's close wakes them so anyway, just after.
            waiting = getattr(getattr(consumer, "_fetcher", None), "_fetch_waiters", ())
            for waiter in list(waiting):
                _settle(waiter)
        raise GroupRefused(line)

    async def send_unless_refused(node_id: int, request: Any, **kwargs: Any) -> Any:
        asked = next((name for kind, name in ASKING.items() if isinstance(request, kind)), None)
        if asked is None:
            return await send(node_id, request, **kwargs)
        committing = isinstance(request, OffsetCommitRequest)
        if refusal.refused and not committing:  # a commit under way already goes: see below
            return await unsent(request, f"{asked} not sent: refused before")
        response = await send(node_id, request, **kwargs)
        group = consumer._group_id
        if asked == "JoinGroup" and response.error_code == REBALANCE_IN_PROGRESS:
            # Retried after the backoff, as the Java consumer does: aiokafka handles the join
            # answered COORDINATOR_LOAD_IN_PROGRESS so, and left this one for a fetch faust
            # does not make out of its group (the worker joined no more)
            response.error_code = COORDINATOR_LOAD_IN_PROGRESS
        if committing:
            line = commit_refusal_line(commit_answers(response), group)
        else:
            line = refusal_line(response.error_code, asked, group, consumer._session_timeout_ms)
        if line is None:
            return response
        if refusal.refuse():
            COORDINATOR_LOG.addFilter(QUIET_ONCE_STOPPING)
            on_refused(line)
        if committing:  # aiokafka raises the answer from `commit` (swallowed below). Failed
            # here, it would mark the coordinator dead and look it up again, only for that
            # lookup to wait for the close
            return response
        return await unsent(request, line)

    client.send = send_unless_refused
    commit = getattr(consumer, "commit", None)
    if commit is None:
        return

    async def commit_unless_refused(*args: Any, **kwargs: Any) -> None:
        if refusal.refused:  # the worker says why, and stops
            return
        committing = asyncio.ensure_future(commit(*args, **kwargs))
        committing.add_done_callback(_retrieved)  # when cancelled with it, below
        refused = asyncio.ensure_future(refusal.wait())
        try:
            await asyncio.wait([committing, refused], return_when=asyncio.FIRST_COMPLETED)
        finally:
            refused.cancel()
            committing.cancel()  # refused meanwhile: its coordinator lookup (or a retry
            # waiting for one) would wait for the close, and faust awaits it before that
        await asyncio.wait([committing])  # at once: cancelled where it waits
        if committing.cancelled():
            return
        try:
            committing.result()
        except KafkaError:
            if not refusal.refused:  # by this commit's answer, or another's meanwhile
                raise

    consumer.commit = commit_unless_refused


def _retrieved(task: asyncio.Future[Any]) -> None:
    """Mark a task's outcome seen: no "exception was never retrieved" for one let go."""
    if not task.cancelled():
        task.exception()
