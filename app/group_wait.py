"""A worker that stays out of its consumer group says so, with the broker's answers and why.

A join takes at most about a session timeout (a member that died without leaving is dropped)
plus a rebalance timeout (the members still there rejoin); a worker out of its group for twice
that is not in a slow join. The embedded dev broker (Tansu 0.6.0) can keep it out for good:
when the members of a group leave one right after the other, a follower first, it keeps the
departed leader as the group's leader, names it in every JoinGroup answer and refuses every
member's SyncGroup with REBALANCE_IN_PROGRESS until it restarts. /ready then says "joining"
for as long, for how long and what the coordinator answered; the log says that and why (see
README, the embedded development broker).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from aiokafka.errors import for_code  # type: ignore[import-untyped]
from aiokafka.protocol.group import (  # type: ignore[import-untyped]
    JoinGroupRequest,
    SyncGroupRequest,
)

log = logging.getLogger(__name__)

REBALANCE_IN_PROGRESS = 27  # Kafka's error code


def warn_after_s(session_timeout_ms: int, rebalance_timeout_ms: int) -> float:
    """How long out of its group (s) before a worker says so: twice the longest a healthy
    join takes (a dead member's session timing out, then the others rejoining)."""
    return 2 * (session_timeout_ms + rebalance_timeout_ms) / 1000


@dataclass
class JoinAnswers:
    """The group coordinator's last answers to this member's JoinGroup and SyncGroup. Written
    by the consumer's thread, read by the worker's loop (hence the lock)."""

    member_id: str = ""  # this member, as the last JoinGroup answer named it
    leader_id: str = ""  # the leader the last successful JoinGroup answer named
    generation: int = -1
    join_error: int = -1  # -1: no JoinGroup answer yet
    sync_error: int = -1  # -1: no SyncGroup answer in this generation under this leader yet
    refusals: int = 0  # SyncGroup answers in a row that were REBALANCE_IN_PROGRESS
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def joined(self, error: int, generation: int, leader_id: str, member_id: str) -> None:
        """A JoinGroup answer. The same generation and leader again (a member that keeps being
        refused) keeps the last SyncGroup answer: it is the one that will come again."""
        with self._lock:
            again = (generation, leader_id, member_id) == (
                self.generation,
                self.leader_id,
                self.member_id,
            )
            self.join_error = error
            if error != 0 or not again:
                self.sync_error, self.refusals = -1, 0
            if error == 0:
                self.generation, self.leader_id, self.member_id = generation, leader_id, member_id

    def synced(self, error: int) -> None:
        with self._lock:
            self.sync_error = error
            self.refusals = self.refusals + 1 if error == REBALANCE_IN_PROGRESS else 0

    def said(self) -> str:
        """The answers, as a person reads them."""
        with self._lock:
            join, sync, refusals = self.join_error, self.sync_error, self.refusals
            leader, member, generation = self.leader_id, self.member_id, self.generation
        if join == -1:
            return "no answer to its JoinGroup yet"
        if join != 0:
            return f"JoinGroup answered {_error(join)}"
        who = "this worker" if leader == member else f"member {leader}"
        said = f"JoinGroup answered generation {generation} with {who} as leader"
        if sync == -1:
            return f"{said}; no answer to its SyncGroup yet"
        times = f", {refusals} times in a row" if refusals > 1 else ""
        return f"{said}; SyncGroup answered {_error(sync)}{times}"

    def refused_under_absent_leader(self) -> bool:
        """The dev broker's stuck group: another member named leader, and this one's SyncGroup
        refused as if a rebalance were under way (the leader never sends the assignment).
        Asked only of a worker out of its group for longer than a healthy join takes."""
        with self._lock:
            return (
                self.join_error == 0
                and self.leader_id not in ("", self.member_id)
                and self.sync_error == REBALANCE_IN_PROGRESS
            )


def _error(code: int) -> str:
    """Kafka's name for an error code, as brokers' logs and docs say it."""
    name = for_code(code).message
    return f"error {code}" if name == "UNKNOWN" else f"{name} ({code})"


def out_of_group(status: str, waited_s: float, answers: JoinAnswers) -> str:
    """How long a worker has been out of its group (`status`: /ready's, joining or
    rebalancing) and what the group coordinator last answered: /ready's reason and the
    WARNING both say it so."""
    return f"{status} for {waited_s:.0f} s; the group coordinator's last answers: {answers.said()}"


class GroupWait:
    """Says (as log lines) when a worker has been out of its group `warn_after_s` or more:
    once, then again every `warn_after_s` while it stays out, and once when it gets in; and,
    for /ready, how long it has been out at any time. Times in s, from any monotonic clock
    the caller reads."""

    def __init__(self, group: str, warn_after_s: float, answers: JoinAnswers) -> None:
        self.group, self.warn_after_s, self.answers = group, warn_after_s, answers
        self._out_since: float | None = None  # None: in its group
        self._warned_at: float | None = None

    def check(self, in_group: bool, status: str, now: float) -> tuple[int, str] | None:
        """(log level, line) to log now, if any. `status`: /ready's (joining, rebalancing)."""
        if in_group:
            out_since, warned = self._out_since, self._warned_at is not None
            self._out_since = self._warned_at = None
            if warned and out_since is not None:
                return logging.INFO, (
                    f"now in consumer group {self.group}, after {now - out_since:.0f} s out of it"
                )
            return None
        if self._out_since is None:
            self._out_since = now
        waited = now - self._out_since
        if waited < self.warn_after_s:
            return None
        if self._warned_at is not None and now - self._warned_at < self.warn_after_s:
            return None
        self._warned_at = now
        return logging.WARNING, self._line(status, waited)

    def waiting(self, status: str, now: float) -> str:
        """/ready's account of a worker out of its group (`status`: joining, rebalancing):
        for how long, and the coordinator's last answers. Asked before the first `check` has
        seen it out, the wait starts now; the warnings and the line said on getting in are
        `check`'s alone."""
        if self._out_since is None:
            self._out_since = now
        return out_of_group(status, now - self._out_since, self.answers)

    def _line(self, status: str, waited: float) -> str:
        head = (
            f"still not in consumer group {self.group}, so not ready: "
            f"{out_of_group(status, waited, self.answers)}"
        )
        if self.answers.refused_under_absent_leader():
            return (
                f"{head}. The leader it names never assigns the partitions: a departed "
                "member the broker still counts. The embedded dev broker does this after the "
                "group's members stop together, and only restarting it clears it (it keeps "
                "nothing: remove KAPPA_STATE_DIR and run `kappa topics` again). On Apache "
                "Kafka or Redpanda, look at "
                f"the group's members (kafka-consumer-groups --describe --group {self.group})"
            )
        return (
            f"{head}. A join takes at most about KAPPA_SESSION_TIMEOUT_MS + "
            "KAPPA_REBALANCE_TIMEOUT_MS: look at the broker and the group's other members (on "
            "the embedded dev broker, a restart clears a stuck group; it keeps nothing: remove "
            "KAPPA_STATE_DIR and run `kappa topics` again)"
        )


def watch_join_answers(consumer: Any, answers: JoinAnswers) -> None:
    """Record the aiokafka `consumer`'s JoinGroup and SyncGroup answers in `answers`, from its
    first join on (call it before the consumer starts). Reaches into aiokafka's private client
    (pinned in pyproject), as `app.group_leave` reaches into its coordinator."""
    client = getattr(consumer, "_client", None)
    if client is None or not hasattr(client, "send"):
        return
    send = client.send

    async def send_and_record(node_id: int, request: Any, **kwargs: Any) -> Any:
        response = await send(node_id, request, **kwargs)  # no answer: it raises, nothing said
        if isinstance(request, JoinGroupRequest):
            answers.joined(
                response.error_code,
                response.generation_id,
                response.leader_id,
                response.member_id,
            )
        elif isinstance(request, SyncGroupRequest):
            answers.synced(response.error_code)
        return response

    client.send = send_and_record
