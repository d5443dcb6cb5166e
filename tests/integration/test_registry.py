"""The version registry on the embedded broker: a version's first snapshot wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings
from app.state_guard import lock_state_dir
from app.topic_reader import read_to_end
from app.topology import Topology
from replay.registry import COMPLETE, DROPPED, RUNNING, Registry, VersionRecord
from replay.runner import _create_version
from replay.versions import diff, drop

pytestmark = pytest.mark.integration


@pytest.fixture
def registry(broker: str, unique: str) -> Registry:
    """A registry of its own (a fresh app id) on the session broker."""
    return Registry(load_settings({"KAPPA_BROKER": broker, "KAPPA_APP_ID": f"reg-{unique}"}))


def running(version: int, end: int, **fields: str) -> VersionRecord:
    """A version being replayed to `end` on orders[0]."""
    return VersionRecord(version, RUNNING, ["orders"], {"orders": {"0": end}}, **fields)


async def test_two_processes_creating_a_version_at_once_share_the_first_snapshot(
    registry: Registry,
) -> None:
    await registry.put_version(running(2, 10, created_at="t1"))
    await registry.put_version(
        running(2, 12, created_at="t2")
    )  # a second process, a moment later, saw more records
    view = await registry.load()
    assert view.versions[2].snapshot == {"orders": {"0": 10}}
    assert view.versions[2].created_at == "t1"

    done = VersionRecord(2, COMPLETE, ["orders"], {"orders": {"0": 10}})
    await registry.put_version(done)  # later records change the status only
    assert (await registry.load()).versions[2].status == COMPLETE


async def test_a_replay_that_lost_the_race_adopts_and_rewrites_the_first_snapshot(
    registry: Registry, broker: str
) -> None:
    await registry.put_version(running(3, 10))
    adopted = await _create_version(registry, running(3, 12))
    assert adopted.snapshot == {"orders": {"0": 10}}
    records = (await read_to_end(broker, registry.topic))[0]
    newest = [r for r in records if r.key == b"version/3"][-1]
    assert json.loads(newest.value)["snapshot"] == {"orders": {"0": 10}}  # what compaction keeps


async def test_a_version_running_on_this_machine_is_not_dropped(
    broker: str, unique: str, tmp_path: Path
) -> None:
    settings = load_settings(
        {
            "KAPPA_BROKER": broker,
            "KAPPA_APP_ID": f"drop-{unique}",
            "KAPPA_TOPIC_PREFIX": f"{unique}.",
            "KAPPA_STATE_DIR": str(tmp_path),
        }
    )
    await Registry(settings).put_version(VersionRecord(2, COMPLETE, ["orders"]))
    held = lock_state_dir(Topology(settings, 2).state_root())  # as a worker of version 2 does
    try:
        with pytest.raises(ConfigError, match="version 2 is running here"):
            await drop(settings, 2)
    finally:
        held.release()
    assert "dropped version 2" in await drop(settings, 2)
    assert (await Registry(settings).load()).versions[2].status == DROPPED


async def test_diff_refuses_a_dropped_or_unknown_version(broker: str, unique: str) -> None:
    settings = load_settings({"KAPPA_BROKER": broker, "KAPPA_APP_ID": f"diff-{unique}"})
    await Registry(settings).put_version(VersionRecord(2, DROPPED, ["orders"]))
    with pytest.raises(ConfigError, match="version 2 was dropped"):
        await diff(settings, 1, 2)
    with pytest.raises(ConfigError, match="version 3 is not in the registry"):
        await diff(settings, 1, 3)
