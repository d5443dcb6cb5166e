"""A stopping consumer leaves its group whatever its generation number.

aiokafka sends LeaveGroup only from generation 1 on: Apache Kafka numbers a group's first
generation 1, but the embedded dev broker numbers it 0. A worker stopped in its group's
first generation then stayed a member until its session timed out, and the next worker's
join waited for that (6–12 s on every first restart, instead of the join's own 3 s).
LeaveGroup names only the group and the member, so sending it at generation 0 is what a
broker numbering from 1 would have been sent for the same member.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

from aiokafka.errors import KafkaError
from aiokafka.protocol.group import LeaveGroupRequest

log = logging.getLogger(__name__)


def leave_on_close(consumer: Any, refused: Callable[[], bool] = lambda: False) -> None:
    """Make the started aiokafka `consumer`'s close leave its group from generation 0 on,
    unless `refused()` says the broker refused it the group for good (`app.group_refusal`):
    it would refuse the LeaveGroup too. Reaches into aiokafka's private coordinator (pinned in
    pyproject)."""
    coordinator = getattr(consumer, "_coordinator", None)
    if coordinator is not None and hasattr(coordinator, "_maybe_leave_group"):
        coordinator._maybe_leave_group = partial(_leave_group, coordinator, refused)


async def _leave_group(coordinator: Any, refused: Callable[[], bool]) -> None:
    """aiokafka's `GroupCoordinator._maybe_leave_group`, first generation included. A best
    effort: not resent when it fails (the session timeout then frees the partitions). A static
    member (`KAPPA_GROUP_INSTANCE_ID`) never leaves: the broker keeps its partitions for it
    until its session times out, so a restart gets them back without a rebalance."""
    if coordinator.generation >= 0 and coordinator._group_instance_id is None and not refused():
        request = LeaveGroupRequest(coordinator.group_id, coordinator.member_id)
        try:
            await coordinator._send_req(request)
        except KafkaError as e:
            log.warning("leaving consumer group %s failed: %r", coordinator.group_id, e)
    coordinator.reset_generation()
