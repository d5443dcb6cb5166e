"""The version registry on the embedded broker: a version's first snapshot wins."""

from __future__ import annotations

import pytest

from app.settings import load_settings
from replay.registry import COMPLETE, RUNNING, Registry, VersionRecord


@pytest.mark.integration
async def test_two_processes_creating_a_version_at_once_share_the_first_snapshot(
    broker: str, unique: str
) -> None:
    settings = load_settings({"KAPPA_BROKER": broker, "KAPPA_APP_ID": f"reg-{unique}"})
    registry = Registry(settings)
    first = VersionRecord(2, RUNNING, ["orders"], {"orders": {"0": 10}}, created_at="t1")
    racer = VersionRecord(2, RUNNING, ["orders"], {"orders": {"0": 12}}, created_at="t2")
    await registry.put_version(first)
    await registry.put_version(racer)  # a second process, a moment later, saw more records
    view = await registry.load()
    assert view.versions[2].snapshot == {"orders": {"0": 10}}
    assert view.versions[2].created_at == "t1"

    done = VersionRecord(2, COMPLETE, ["orders"], {"orders": {"0": 10}})
    await registry.put_version(done)  # later records change the status only
    assert (await registry.load()).versions[2].status == COMPLETE
