"""Static group membership (`KAPPA_GROUP_INSTANCE_ID`): a worker restarted within its session
timeout gets its partitions back in the same group generation, so the other workers of its
group are not rebalanced (they neither pause nor hand over state)."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.checks import eventually
from tests.support.workers import Worker, kappa_env, patched_kappa, run_kappa

pytestmark = pytest.mark.integration

JOINED = re.compile(r"Joined group '[^']+' \(generation (\d+)\)")
SYNCED = "Successfully synced group"
REJOINING = "(Re-)joining group"
HEARTBEAT = "test: heartbeat answered"
# aiokafka says an answered heartbeat at DEBUG only; the worker restarted here must have been
# running in its group, as a worker is before a restart, not have just joined (below).
SAYING_HEARTBEATS = f"""
from aiokafka.consumer.group_coordinator import GroupCoordinator

beat = GroupCoordinator._do_heartbeat

async def said(self):
    answered = await beat(self)
    if answered:
        print("{HEARTBEAT}", file=sys.stderr, flush=True)
    return answered

GroupCoordinator._do_heartbeat = said
"""
Held = dict[str, list[int]]  # pipeline -> its source partitions on one worker


def _ready_partitions(worker: Worker) -> Held | None:
    """The source partitions by pipeline a ready worker holds (`/ready`); None if not ready."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.web_port}/ready", timeout=2) as r:
            return json.loads(r.read())["partitions"]  # type: ignore[no-any-return]
    except (OSError, urllib.error.HTTPError):  # not serving yet, or 503: not ready
        return None


def _alive(*workers: Worker):
    def check() -> None:
        for w in workers:
            assert w.proc is not None
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker died ({w.proc.returncode}):\n{w.tail_log(80)}")

    return check


def _heartbeat_since_sync(worker: Worker):
    async def check() -> None:
        log = worker.log_path.read_text(errors="replace")
        assert SYNCED in log and HEARTBEAT in log.rpartition(SYNCED)[2], worker.tail_log()

    return check


def _generations(worker: Worker) -> list[int]:
    return [int(g) for g in JOINED.findall(worker.log_path.read_text(errors="replace"))]


async def test_a_static_worker_restarted_in_its_session_keeps_its_partitions_without_a_rebalance(
    broker: str, unique: str, tmp_path: Path
) -> None:
    base = kappa_env(
        broker,
        unique,
        tmp_path / "unused",
        KAPPA_LOG_LEVEL="info",  # the group's joins are logged at INFO
        # The same for both: the dev broker keeps a static member for about the session timeout
        # of the member that opened the join, not its own. And it expires the member one
        # session after its last heartbeat even while its rejoin is held (half a session, then
        # 3 s in SyncGroup): at 10 s a restart barely made it, at 20 s with 5 s to spare.
        KAPPA_SESSION_TIMEOUT_MS="20000",
    )
    assert run_kappa(["topics"], base).returncode == 0
    other = Worker({**base, "KAPPA_STATE_DIR": str(tmp_path / "other")}, tmp_path / "other.log")
    static_env = {
        **base,
        "KAPPA_STATE_DIR": str(tmp_path / "static"),
        "KAPPA_GROUP_INSTANCE_ID": f"{unique}-worker-0",
    }
    command = patched_kappa(SAYING_HEARTBEATS)
    static = Worker(static_env, tmp_path / "static.log", command=command)
    restarted = Worker(static_env, tmp_path / "restarted.log", web_port=static.web_port)
    split: dict[str, Held] = {}

    async def shared() -> None:
        """Both ready, every source's partitions split between them."""
        held = {"other": _ready_partitions(other), "static": _ready_partitions(static)}
        mine, theirs = held["static"], held["other"]
        assert mine and theirs and any(mine.values()) and any(theirs.values()), held
        for pipeline, partitions in mine.items():
            both = set(partitions) | set(theirs[pipeline])
            assert both == {0, 1, 2, 3} and not set(partitions) & set(theirs[pipeline]), held
        split.update(other=theirs, static=mine)

    try:
        other.start()
        static.start()
        await eventually(shared, timeout=60, alive=_alive(other, static))
        await eventually(_heartbeat_since_sync(static), timeout=30, alive=_alive(static))
        generation = _generations(static)[-1]
        rejoins = other.log_path.read_text().count(REJOINING)
        assert static.stop() == 0, static.tail_log()  # an orderly stop: no LeaveGroup

        restarted.start()

        async def back() -> None:
            assert _ready_partitions(restarted) == split["static"]

        await eventually(back, timeout=60, alive=_alive(other, restarted))
        # Its join was answered in the generation it left: the group did not rebalance, so the
        # other worker never rejoined and still holds what it held.
        assert _generations(restarted) == [generation], restarted.tail_log(80)
        assert other.log_path.read_text().count(REJOINING) == rejoins, other.tail_log(80)
        assert _ready_partitions(other) == split["other"]
    finally:
        for w in (other, static, restarted):
            if w.proc is not None and w.proc.poll() is None:
                w.stop()
