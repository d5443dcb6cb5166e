"""`kappa worker`: check the broker and topics, then hand over to Faust's worker."""

from __future__ import annotations

import asyncio
import dataclasses
import logging

from app.admin import ensure_topics, partition_counts, wait_for_broker
from app.settings import ConfigError, Settings
from app.topology import Topology

log = logging.getLogger("kappa.worker")


def run_worker(
    settings: Settings, version: int | None, pipelines: list[str], web_port: int | None
) -> int:
    import faust

    from app.worker import create_app

    if web_port is not None:
        settings = dataclasses.replace(settings, web_port=web_port)
    if version is None:
        version = asyncio.run(live_version(settings))
    topology = Topology(settings, version).select(pipelines)
    asyncio.run(prepare_topics(settings, topology))
    app = create_app(settings, version, pipelines)
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    names = ", ".join(p.name for p in topology.pipelines)
    print(
        f"kappa worker: version {version}, pipelines {names}, "
        f"broker {settings.broker}, metrics on http://{settings.web_host}:{settings.web_port}/metrics",
        flush=True,
    )
    try:
        worker.execute_from_commandline()
    except SystemExit as e:
        return int(e.code or 0)
    finally:
        for runner in getattr(app, "kappa_runners", []):
            runner.close()
    return 0


async def prepare_topics(settings: Settings, topology: Topology) -> None:
    """Create what is missing; refuse sources whose partitioning the state cannot follow."""
    await wait_for_broker(settings.broker)
    spec = {t: (settings.partitions, cfg) for t, cfg in topology.all_topics().items()}
    await ensure_topics(settings.broker, spec, settings.replication)
    counts = await partition_counts(settings.broker, list(spec))
    wrong = {t: n for t, n in counts.items() if n != settings.partitions}
    if wrong:
        desc = ", ".join(f"{t} has {n}" for t, n in sorted(wrong.items()))
        raise ConfigError(
            f"topics must have KAPPA_PARTITIONS={settings.partitions} partitions, but {desc}"
        )


async def live_version(settings: Settings) -> int:
    """The version `kappa promote` made live (1 before any promote)."""
    from replay.registry import Registry

    await wait_for_broker(settings.broker)
    return await Registry(settings).live_version()
