"""`kappa demo` shows the version its worker runs: the live one, not always version 1."""

from __future__ import annotations

import pytest

from app.demo import demo_topology
from app.settings import ConfigError, load_settings
from replay.registry import LIVE, Registry, VersionRecord

pytestmark = pytest.mark.integration


async def test_the_demo_reads_and_makes_the_live_versions_topics(broker: str, unique: str) -> None:
    settings = load_settings({"KAPPA_BROKER": broker, "KAPPA_APP_ID": f"demo-{unique}"})
    fresh = await demo_topology(settings)  # no registry yet: version 1, as a worker's
    assert (fresh.version, fresh.physical("orders.revenue-1m")) == (1, "orders.revenue-1m")
    registry = Registry(settings)
    await registry.put_version(VersionRecord(3, LIVE, ["orders"], {"orders": {"0": 1}}))
    promoted = await demo_topology(settings)
    assert promoted.version == 3
    assert promoted.physical("orders.revenue-1m") == "orders.revenue-1m.v3"
    assert promoted.physical("orders") == "orders"  # the source every version reads
    await registry.put_dropping(3, True)  # a drop of it started (as if it were not live)
    with pytest.raises(ConfigError, match="drop"):
        await demo_topology(settings)
