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
from tests.support.workers import Worker, kappa_env, run_kappa

pytestmark = pytest.mark.integration

JOINED = re.compile(r"Joined group '[^']+' \(generation (\d+)\)")
REJOINING = "(Re-)joining group"


def _ready_partitions(worker: Worker) -> dict[str, list[int]] | None:
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


def _generations(worker: Worker) -> list[int]:
    return [int(g) for g in JOINED.findall(worker.log_path.read_text(errors="replace"))]


async def test_a_static_worker_restarted_in_its_session_keeps_its_partitions_without_a_rebalance(
    broker: str, unique: str, tmp_path: Path
) -> None:
    base = kappa_env(broker, unique, tmp_path / "unused", KAPPA_LOG_LEVEL="info")  # group logs
    assert run_kappa(["topics"], base).returncode == 0
    other = Worker({**base, "KAPPA_STATE_DIR": str(tmp_path / "other")}, tmp_path / "other.log")
    static_env = {
        **base,
        "KAPPA_STATE_DIR": str(tmp_path / "static"),
        "KAPPA_GROUP_INSTANCE_ID": f"{unique}-worker-0",
        # room for a restart on a loaded machine: the broker keeps the member this long
        "KAPPA_SESSION_TIMEOUT_MS": "12000",
    }
    static = Worker(static_env, tmp_path / "static.log")
    restarted = Worker(static_env, tmp_path / "restarted.log", web_port=static.web_port)
    split: dict[str, dict[str, list[int]]] = {}

    async def shared() -> None:
        """Both ready, the source partitions split between them."""
        held = {name: _ready_partitions(w) for name, w in (("other", other), ("static", static))}
        assert held["other"] and held["static"], held
        mine, theirs = set(held["static"]["orders"]), set(held["other"]["orders"])
        assert mine and theirs and mine | theirs == {0, 1, 2, 3} and not mine & theirs, held
        split.update(held)  # type: ignore[arg-type]

    try:
        other.start()
        static.start()
        await eventually(shared, timeout=60, alive=_alive(other, static))
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
