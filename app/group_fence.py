"""A static member fenced out of its group by another process with its id stops, in one line.

Apache Kafka gives a `group.instance.id` (`KAPPA_GROUP_INSTANCE_ID`) to the last process that
joined with it, and answers the older process's JoinGroup, SyncGroup and Heartbeat (from
version 3 on, which names the id) with FENCED_INSTANCE_ID (82). aiokafka 0.14 does not know that
error: a fenced heartbeat crashed the worker with a traceback, and a fenced join or sync left it
out of its group for good. Worse, it sends Heartbeat version 1, which does not name the id, so
the broker answers a fenced member's heartbeat UNKNOWN_MEMBER_ID instead: aiokafka then joins
again as a new member with the same id, which fences the other process in turn, and so on: two
processes taking the same partitions from each other for as long as both run. Kafka Streams
treats a fenced instance as fatal; so does Kappa: its heartbeats name the id, and the first 82
stops the worker, with no group request (join, heartbeat, offset commit) sent after it.
aiokafka's offset commits (up to v3) do not name the id either: Kafka answers the older
process's UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION, upon which aiokafka forgets its member id
and joins again with the instance id, which takes the id back and fences the newer process
(the one that joined last would stop). So a commit answered so is followed by a heartbeat
naming the id, and an 82 to that fences this member instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

from aiokafka.errors import KafkaError  # type: ignore[import-untyped]
from aiokafka.protocol.api import Request, RequestStruct, Response  # type: ignore[import-untyped]
from aiokafka.protocol.commit import OffsetCommitRequest  # type: ignore[import-untyped]
from aiokafka.protocol.group import (  # type: ignore[import-untyped]
    HeartbeatRequest,
    HeartbeatRequest_v0,
    HeartbeatRequest_v1,
    HeartbeatResponse_v1,
    JoinGroupRequest,
    SyncGroupRequest,
)
from aiokafka.protocol.types import Int32, Schema, String  # type: ignore[import-untyped]

FENCED_INSTANCE_ID = 82  # Kafka's error code
# What Apache Kafka answers a replaced static member's offset commit, which (aiokafka's, up to
# version 3) does not name the id: ILLEGAL_GENERATION (22), UNKNOWN_MEMBER_ID (25).
NOT_THIS_MEMBER = frozenset({22, 25})
# The requests a fenced member must not send again: each says "I am this member".
MEMBER_REQUESTS = (HeartbeatRequest, JoinGroupRequest, SyncGroupRequest, OffsetCommitRequest)


def fenced_line(group: str, instance_id: str) -> str:
    """Why a fenced worker stops, and what to do, as its one line."""
    return (
        f"another process joined consumer group {group} with KAPPA_GROUP_INSTANCE_ID="
        f"{instance_id}, so the broker fenced this one (FENCED_INSTANCE_ID): give each worker "
        "process its own id; stopping"
    )


class InstanceFenced(KafkaError):  # type: ignore[misc]
    """What a fenced member's group requests fail with, unsent."""


class GroupFence:
    """Whether the coordinator fenced this member. Set by the consumer's thread, read by the
    worker's loop: a `threading.Event`."""

    def __init__(self, group: str, instance_id: str) -> None:
        self.group, self.instance_id = group, instance_id
        self._fenced = threading.Event()

    @property
    def fenced(self) -> bool:
        return self._fenced.is_set()

    def answered(self, error_code: int) -> bool:
        """A group coordinator's answer to this member: True the first time it says fenced."""
        if error_code != FENCED_INSTANCE_ID or self._fenced.is_set():
            return False
        self._fenced.set()
        return True

    def line(self) -> str:
        return fenced_line(self.group, self.instance_id)


class HeartbeatResponse_v3(Response):  # type: ignore[misc]
    API_KEY = 12
    API_VERSION = 3
    SCHEMA = HeartbeatResponse_v1.SCHEMA


class HeartbeatRequest_v3(RequestStruct):  # type: ignore[misc]
    """Heartbeat naming the member's `group.instance.id` (KIP-345), which aiokafka's (v0, v1)
    do not: the broker can then say a replaced static member is fenced."""

    API_KEY = 12
    API_VERSION = 3
    RESPONSE_TYPE = HeartbeatResponse_v3
    SCHEMA = Schema(
        ("group", String("utf-8")),
        ("generation_id", Int32),
        ("member_id", String("utf-8")),
        ("group_instance_id", String("utf-8")),
    )


class StaticHeartbeatRequest(
    Request[HeartbeatRequest_v0 | HeartbeatRequest_v1 | HeartbeatRequest_v3]  # type: ignore[misc]
):
    """aiokafka's heartbeat for a static member: v3 (naming its id) where the broker takes it."""

    API_KEY = 12

    def __init__(self, beat: Any, instance_id: str) -> None:
        self.beat, self.instance_id = beat, instance_id

    def build(self, request_struct_class: type[Any]) -> Any:
        if request_struct_class is HeartbeatRequest_v3:
            b = self.beat
            return HeartbeatRequest_v3(b._group, b._generation_id, b._member_id, self.instance_id)
        return self.beat.build(request_struct_class)


# Those whose answers can say FENCED_INSTANCE_ID: the ones naming the id (Kappa's heartbeats;
# aiokafka's OffsetCommit, up to version 3, does not).
NAMING_THE_ID = (JoinGroupRequest, SyncGroupRequest, StaticHeartbeatRequest)


def commit_errors(response: Any) -> set[int]:
    """The error codes of an OffsetCommit response (one per topic partition)."""
    return {error for _, partitions in response.topics for _, error in partitions}


class QuietOnceStopping(logging.Filter):
    """Put on aiokafka's coordinator's logger once fenced or refused for good
    (`app.group_refusal`; the process is stopping): its warnings and errors then are about the
    requests the member no longer sends (an ERROR "Error sending JoinGroupRequest ...
    InstanceFenced" at close, the coordinator marked dead for it), and the worker has said why
    already."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING


COORDINATOR_LOG = logging.getLogger("aiokafka.consumer.group_coordinator")
QUIET_ONCE_STOPPING = QuietOnceStopping()


def stop_when_fenced(consumer: Any, fence: GroupFence, on_fenced: Callable[[], None]) -> None:
    """Make the aiokafka `consumer` (a static member; call before it starts) name its id in its
    heartbeats, and call `on_fenced` (from the consumer's thread) when the coordinator first
    answers FENCED_INSTANCE_ID. From then on its heartbeats, joins and syncs (the fenced one
    included) wait for the consumer to close and then fail unsent, so it does not rejoin (which
    would fence the other process back); its offset commits fail at once, unsent (one the
    consumer had under way returns without committing: faust would crash on the refusal);
    and its coordinator's warnings about them are not logged. Reaches into aiokafka's private client
    and coordinator (pinned in pyproject), as `app.group_wait` does."""
    client = getattr(consumer, "_client", None)
    if client is None or not hasattr(client, "send"):
        return
    send = client.send

    async def refuse(request: Any) -> Any:
        if not isinstance(request, OffsetCommitRequest):
            closing = getattr(getattr(consumer, "_coordinator", None), "_closing", None)
            if isinstance(closing, asyncio.Future):
                await asyncio.shield(closing)
        raise InstanceFenced(fence.line())

    async def fenced_now(node_id: int, **kwargs: Any) -> bool:
        """Whether a heartbeat naming the id is answered FENCED_INSTANCE_ID (on Kafka, the
        check for a replaced static member comes before those of its generation and id)."""
        coordinator = consumer._coordinator
        beat = HeartbeatRequest(coordinator.group_id, coordinator.generation, coordinator.member_id)
        answer = await send(node_id, StaticHeartbeatRequest(beat, fence.instance_id), **kwargs)
        return fence.answered(answer.error_code)

    async def send_unless_fenced(node_id: int, request: Any, **kwargs: Any) -> Any:
        if not isinstance(request, MEMBER_REQUESTS):
            return await send(node_id, request, **kwargs)
        if fence.fenced:
            return await refuse(request)
        if isinstance(request, HeartbeatRequest):
            request = StaticHeartbeatRequest(request, fence.instance_id)
        response: Response = await send(node_id, request, **kwargs)
        if isinstance(request, NAMING_THE_ID):
            fenced = fence.answered(response.error_code)
        else:  # aiokafka would join again, as a new member with the id: the other fenced
            fenced = (
                isinstance(request, OffsetCommitRequest)
                and not NOT_THIS_MEMBER.isdisjoint(commit_errors(response))
                and await fenced_now(node_id, **kwargs)
            )
        if fenced:
            COORDINATOR_LOG.addFilter(QUIET_ONCE_STOPPING)
            on_fenced()
            return await refuse(request)
        if fence.fenced:  # by another request's answer while this one was on its way: its own
            return await refuse(request)  # (82 again) would reach aiokafka as an unknown error
        return response

    client.send = send_unless_fenced
    commit = getattr(consumer, "commit", None)
    if commit is None:
        return

    async def commit_unless_fenced(*args: Any, **kwargs: Any) -> None:
        with contextlib.suppress(InstanceFenced):  # fenced since it began: the worker says
            await commit(*args, **kwargs)  # why, and stops

    consumer.commit = commit_unless_fenced
