"""Sources and outputs keep every record: Kafka deletes by record timestamp, and outputs carry
event time, so a backfill's outputs would otherwise be deleted as soon as they are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.admin import ensure_topics, topic_config
from app.produce import produce_records
from app.settings import load_settings
from app.topology import Topology
from tests.support.datasets import GOOD_ORDER
from tests.support.workers import Worker, kappa_env, run_kappa

pytestmark = pytest.mark.integration


async def test_a_versions_sources_and_outputs_are_created_keeping_every_record(
    broker: str, unique: str
) -> None:
    settings = load_settings({"KAPPA_BROKER": broker, "KAPPA_TOPIC_PREFIX": f"{unique}."})
    topology = Topology(settings, 2)
    spec = {t: (settings.partitions, cfg) for t, cfg in topology.all_topics().items()}
    await ensure_topics(broker, spec)

    kept = topology.kept_topics()
    assert f"{unique}.orders" in kept and f"{unique}.orders.by-user.v2" in kept
    assert await topic_config(broker, list(spec), "retention.ms") == dict.fromkeys(kept, "-1")
    changelogs = set(spec) - set(kept)
    assert await topic_config(broker, list(spec), "cleanup.policy") == dict.fromkeys(
        changelogs, "compact"
    )


async def test_a_replay_and_a_worker_warn_about_a_source_that_deletes_by_age(
    broker: str, unique: str, tmp_path: Path
) -> None:
    """A source created by someone else with the broker's default retention: older events
    are gone for good, and the user should hear it before relying on the backfill."""
    source = f"{unique}.orders"
    await ensure_topics(broker, {source: (4, {"retention.ms": "604800000"})})
    order = json.dumps(GOOD_ORDER).encode()
    await produce_records(broker, source, [(b"p1", order)], progress=False)
    env = kappa_env(broker, unique, tmp_path / "state")
    r = run_kappa(["replay", "--version", "2", "--no-progress"], env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{source} (retention.ms=604800000) delete records" in r.stderr, r.stderr
    assert f"{unique}.orders.revenue-1m.v2" not in r.stderr  # created to keep every record

    worker = Worker(env, tmp_path / "worker.log").start()  # the live version warns too
    try:
        worker.wait_until(lambda m: m.get("kappa_events_in_total", 0) >= 1)
    finally:
        assert worker.stop() == 0, worker.tail_log()
    assert f"{source} (retention.ms=604800000) delete records" in worker.log_path.read_text()
