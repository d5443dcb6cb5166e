"""Existing topics whose settings would break Kappa: changelogs that are not compacted are
refused, outputs that refuse records stamped far from the broker's clock are named."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from app.admin import (
    NO_LIMIT_MS,
    TIMESTAMP_LIMITS,
    ensure_topics,
    existing_topics,
    require_compacted,
    warn_time_retention,
    warn_timestamp_limits,
)
from app.broker import free_port
from app.settings import ConfigError, load_settings
from app.topology import Topology
from replay.registry import Registry
from tests.support.workers import kappa_env, run_kappa

pytestmark = pytest.mark.integration


async def test_a_changelog_or_registry_that_deletes_records_is_refused(
    broker: str, unique: str
) -> None:
    compact, both, aging, deleting = (f"{unique}.{n}" for n in ("c", "cd", "cda", "d"))
    await ensure_topics(
        broker,
        {
            compact: (1, {"cleanup.policy": "compact"}),
            both: (1, {"cleanup.policy": "compact,delete", "retention.ms": "-1"}),
            aging: (1, {"cleanup.policy": "compact,delete", "retention.ms": "604800000"}),
            deleting: (1, {"cleanup.policy": "delete"}),
        },
    )
    await require_compacted(broker, [compact, both, f"{unique}.missing"])
    with pytest.raises(ConfigError) as refused:
        await require_compacted(broker, [compact, both, aging, deleting])
    assert str(refused.value).startswith(
        f"{aging} (cleanup.policy=compact,delete, retention.ms=604800000), "
        f"{deleting} (cleanup.policy=delete) must keep every key's latest record"
    )


async def test_a_replay_a_worker_and_topics_refuse_a_changelog_created_without_compaction(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    topology = Topology(load_settings(env), 2)
    (orders,) = (p for p in topology.pipelines if p.name == "orders")
    changelog = topology.changelog(orders)
    await ensure_topics(broker, {changelog: (4, {"cleanup.policy": "delete"})})
    await ensure_topics(broker, {f"{unique}.orders": (4, {})})

    refusal = (
        f"error: {changelog} (cleanup.policy=delete) must keep every key's latest record: set "
        "cleanup.policy=compact on them (created by someone else, or changed since Kappa "
        "created them)"
    )
    r = run_kappa(["replay", "orders", "--version", "2", "--dry-run"], env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [f"kappa replay: {refusal}"]

    worker = ["worker", "--version", "2", "--pipeline", "orders", "--web-port", str(free_port())]
    r = run_kappa(worker, env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == f"kappa worker: {refusal}"

    r = run_kappa(["topics", "--version", "2"], env)  # it would say they were ready
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines() == [f"kappa topics: {refusal}"]


async def test_topics_refuses_topics_with_another_partition_count_as_a_worker_does(
    broker: str, unique: str, tmp_path: Path
) -> None:
    env = kappa_env(broker, unique, tmp_path / "state")
    assert run_kappa(["topics"], env).returncode == 0
    r = run_kappa(["topics"], {**env, "KAPPA_PARTITIONS": "8"})
    assert r.returncode == 2, r.stdout + r.stderr
    [line] = r.stderr.strip().splitlines()
    assert line.startswith("kappa topics: error: topics must have KAPPA_PARTITIONS=8 partitions")


@pytest.mark.parametrize("command", ["topics", "worker"])
async def test_a_partition_count_refused_before_anything_is_created(
    broker: str, unique: str, tmp_path: Path, command: str
) -> None:
    """The version's topics were created first, then refused: the version was listed as
    `unrecorded`, and the run with the right setting was refused because of them."""
    await ensure_topics(broker, {f"{unique}.orders": (4, {})})
    env = kappa_env(broker, unique, tmp_path / "state")
    args = [command, "--version", "8"]
    if command == "worker":
        args += ["--web-port", str(free_port())]
    r = run_kappa(args, {**env, "KAPPA_PARTITIONS": "2"})
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stderr.strip().splitlines()[-1] == (
        f"kappa {command}: error: topics must have KAPPA_PARTITIONS=2 partitions, but "
        f"{unique}.orders has 4: set KAPPA_PARTITIONS=4 to use them"
    )
    mine = set(Topology(load_settings(env), 8).all_topics()) - {f"{unique}.orders"}
    assert not mine & await existing_topics(broker)
    listed = run_kappa(["versions"], env)
    assert "8" not in [row.split()[0] for row in listed.stdout.splitlines()[1:]], listed.stdout
    assert 8 not in (await Registry(load_settings(env)).load()).definitions  # nor its windows
    retried = run_kappa(["topics", "--version", "8"], env)  # the right setting (4)
    assert retried.returncode == 0, retried.stderr


@pytest.mark.parametrize(
    ("warn", "limited", "unlimited", "warning"),
    [
        # sources and outputs that delete by age: a replay cannot reach what is gone
        (
            warn_time_retention,
            {"retention.ms": "604800000"},
            {"retention.ms": "-1"},
            "(retention.ms=604800000) delete records older than retention.ms",
        ),
        # outputs that refuse records stamped far from the broker's clock (event time)
        (
            warn_timestamp_limits,
            {"message.timestamp.after.max.ms": "3600000"},
            dict.fromkeys(TIMESTAMP_LIMITS, NO_LIMIT_MS),
            "(message.timestamp.after.max.ms=3600000) refuse records stamped that far",
        ),
    ],
)
async def test_topics_whose_configs_break_kappa_are_named_in_one_warning(
    broker: str,
    unique: str,
    caplog: pytest.LogCaptureFixture,
    warn: Callable[[str, list[str]], Awaitable[list[str]]],
    limited: dict[str, str],
    unlimited: dict[str, str],
    warning: str,
) -> None:
    bad, fine, plain = f"{unique}.bad", f"{unique}.fine", f"{unique}.plain"
    # the dev broker reports only what was set: `plain` reports nothing
    await ensure_topics(broker, {bad: (1, limited), fine: (1, unlimited), plain: (1, {})})
    with caplog.at_level(logging.WARNING, logger="app.admin"):
        assert await warn(broker, [bad, fine, plain]) == [bad]
    (logged,) = [r for r in caplog.records if r.name == "app.admin"]
    assert logged.getMessage().startswith(f"{bad} {warning}")


async def test_a_versions_outputs_are_created_without_timestamp_limits_where_known(
    broker: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dev broker reports no broker configs, so it is told here that it knows the limits
    (as Apache Kafka 3.6+ does); the topics themselves are created on it for real."""
    from app import admin

    async def kafka_36(_: object) -> set[str]:
        return {f"log.{name}" for name in TIMESTAMP_LIMITS}

    monkeypatch.setattr(admin, "_broker_config_names", kafka_36)
    settings = load_settings({"KAPPA_BROKER": broker, "KAPPA_TOPIC_PREFIX": f"{unique}."})
    topology = Topology(settings, 2)
    await admin.ensure_version_topics(broker, topology)
    configs = await admin.topic_configs(broker, list(topology.all_topics()), TIMESTAMP_LIMITS)
    lifted = dict.fromkeys(TIMESTAMP_LIMITS, NO_LIMIT_MS)
    assert {t: cfg for t, cfg in configs.items() if cfg} == dict.fromkeys(
        topology.output_topics(), lifted
    )  # outputs only: not the source, not the changelogs


async def test_topics_refuses_a_registry_that_deletes_records_as_a_worker_does(
    broker: str, unique: str, tmp_path: Path
) -> None:
    from app.topology import registry_topic

    env = kappa_env(broker, unique, tmp_path / "state")
    registry = registry_topic(load_settings(env))
    await ensure_topics(broker, {registry: (1, {"cleanup.policy": "delete"})})
    r = run_kappa(["topics", "--version", "1"], env)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{registry} (cleanup.policy=delete) must keep every key's latest record" in r.stderr
