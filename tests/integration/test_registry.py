"""The version registry on the embedded broker: a version's first snapshot wins."""

from __future__ import annotations

import json

import pytest

from app.settings import load_settings
from app.topic_reader import read_to_end
from replay.registry import COMPLETE, RUNNING, Registry, VersionRecord
from replay.runner import _create_version

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
