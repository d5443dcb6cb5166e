"""Whether a worker is ready to serve: what `GET /ready` answers (a Kubernetes readiness probe).

A worker is ready once it has joined its group, no rebalance is under way, and the state of
every partition assigned to it is open (restored where its changelog was ahead): its queries
then answer from that state, and its pipelines take records without first restoring.
`/health` stays what a liveness probe asks: the process is up and serving.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Set
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PipelinePartitions:
    """One pipeline's source partitions assigned to this worker, and those whose state is open."""

    assigned: Set[int]
    open: Set[int]


def readiness(
    rebalances_done: int,
    rebalancing: bool,
    pipelines: Mapping[str, PipelinePartitions],
    out_of_group: Callable[[str], str] | None = None,
) -> tuple[bool, dict[str, Any]]:
    """(ready, the JSON body saying why). `rebalances_done`: rebalances ended since start (0:
    not yet in its group); `pipelines`: by name; `out_of_group`, given the status (joining,
    rebalancing), says for how long and what the group coordinator answered (see
    `app.group_wait.GroupWait.waiting`)."""

    def out(status: str, reason: str) -> tuple[bool, dict[str, Any]]:
        said = f"{reason}: {out_of_group(status)}" if out_of_group is not None else reason
        return False, {"status": status, "reason": said}

    if rebalances_done == 0:
        return out("joining", "not yet in its consumer group")
    if rebalancing:
        return out("rebalancing", "partitions are being reassigned")
    opening = {
        name: sorted(p.assigned - p.open) for name, p in pipelines.items() if p.assigned - p.open
    }
    if opening:
        return False, {
            "status": "restoring",
            "reason": "partition states still opening (restoring from their changelogs)",
            "partitions": opening,
        }
    assigned = {name: sorted(p.assigned) for name, p in pipelines.items()}
    return True, {"status": "ready", "partitions": assigned}
