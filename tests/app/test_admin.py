"""Topic administration logic that needs no broker (the rest: tests/integration)."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiokafka.errors import KafkaError

from app import admin
from app.admin import BrokerUnreachable, accepts_connections, wait_for_broker
from app.broker import free_port


async def test_a_broker_that_will_not_tell_its_limits_leaves_the_copy_limit_as_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def refuse(bootstrap: object, topics: list[str]) -> dict[str, int]:
        raise KafkaError("TopicAuthorizationFailed")

    monkeypatch.setattr(admin, "max_message_bytes", refuse)
    assert await admin.copy_max_bytes("127.0.0.1:1", 5000, ["orders.dlq"]) == 5000


def test_outputs_get_timestamp_limits_lifted_only_where_the_broker_knows_the_configs() -> None:
    # Apache Kafka 3.6+ reports `log.message.timestamp.{before,after}.max.ms` among its configs;
    # older brokers refuse an unknown topic config, so a topic gets none there.
    kafka_36 = {"log.message.timestamp.before.max.ms", "log.message.timestamp.after.max.ms", "x"}
    assert admin.no_timestamp_limits(kafka_36) == {
        "message.timestamp.before.max.ms": "9223372036854775807",
        "message.timestamp.after.max.ms": "9223372036854775807",
    }
    assert admin.no_timestamp_limits({"log.message.timestamp.difference.max.ms"}) == {}
    assert admin.no_timestamp_limits(set()) == {}  # the dev broker, or one that will not say


async def test_the_broker_config_names_are_read_from_its_describe_configs_answer() -> None:
    """The answer's shape as aiokafka 0.14 decodes it (error, message, type, name, entries)."""
    from types import SimpleNamespace

    class _Admin:
        async def describe_cluster(self) -> dict:
            return {"brokers": [{"node_id": 3}]}

        async def describe_configs(self, resources: list) -> list:
            assert [(r.resource_type.name, r.name) for r in resources] == [("BROKER", "3")]
            entries = [("log.message.timestamp.after.max.ms", "3600000", False, 5, False, [])]
            return [SimpleNamespace(resources=[(0, "", 4, "3", entries)])]

    names = await admin._broker_config_names(_Admin())  # type: ignore[arg-type]
    assert admin.no_timestamp_limits(names) == {
        "message.timestamp.after.max.ms": "9223372036854775807"
    }


async def test_a_broker_that_will_not_tell_its_topic_configs_does_not_stop_a_worker(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Without DescribeConfigs permission the compaction check cannot be made: a warning, not a
    refusal to start (the configs may well be right)."""

    async def refuse(bootstrap: object, topics: list[str], names: object) -> dict:
        raise KafkaError("TopicAuthorizationFailed")

    monkeypatch.setattr(admin, "topic_configs", refuse)
    await admin.require_compacted("127.0.0.1:1", ["kappa-v1-orders-changelog"])
    assert "not checked that they are compacted" in caplog.text


async def test_an_address_that_accepts_connections_but_says_no_kafka_is_told_apart() -> None:
    """A frozen broker, or a TLS listener spoken to in plain, accepts the connection and never
    answers: "cannot reach ... start it with kappa broker" sent users after the wrong cause."""
    connections: list[asyncio.StreamWriter] = []

    async def silent(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)  # held open, never answered

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        with pytest.raises(BrokerUnreachable) as refused:
            await wait_for_broker(f"127.0.0.1:{port}", timeout_s=0.1, attempt_timeout_ms=300)
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
    assert str(refused.value).startswith(
        f"the Kafka broker at 127.0.0.1:{port} accepts connections but does not answer ("
    )
    assert "if its listener wants TLS or SASL, set KAPPA_SECURITY_PROTOCOL" in str(refused.value)
    assert await accepts_connections(f"127.0.0.1:{free_port()}") is False


class _Cluster:
    """An admin client of a cluster of `brokers` brokers with no topics yet."""

    def __init__(self, brokers: int) -> None:
        self.brokers = brokers
        self.created: list[object] = []

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def list_topics(self) -> list[str]:
        return []

    async def create_topics(self, new: list[object]) -> object:
        from types import SimpleNamespace

        self.created.extend(new)
        return SimpleNamespace(topic_errors=[])

    async def describe_cluster(self) -> dict[str, object]:
        return {"brokers": [{"node_id": i} for i in range(self.brokers)]}


@pytest.mark.parametrize(
    ("brokers", "replication", "warned"), [(3, 1, True), (1, 1, False), (3, 3, False)]
)
async def test_unreplicated_topics_on_a_cluster_of_several_brokers_get_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    brokers: int,
    replication: int,
    warned: bool,
) -> None:
    """KAPPA_REPLICATION defaults to 1, right for the one dev broker: on a real cluster a
    broker lost would take changelogs with it, so creating topics that way is said."""
    cluster = _Cluster(brokers)
    monkeypatch.setattr(admin, "new_admin", lambda *a, **kw: cluster)
    created = await admin.ensure_topics("127.0.0.1:1", {"a": (4, {}), "b": (4, {})}, replication)
    assert created == ["a", "b"]
    said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    expected = (
        "created 2 topic(s) with replication factor 1 on a cluster of 3 brokers: losing one "
        "broker loses their records, changelogs included; set KAPPA_REPLICATION (3 is usual) "
        "before creating topics"
    )
    assert said == ([expected] if warned else [])


async def test_a_cluster_that_will_not_say_its_brokers_still_gets_its_topics(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The broker count only decides a warning: a describe that hangs or fails must neither
    hold the command up past a few seconds nor fail it after the topics were made."""

    class _Stalls(_Cluster):
        async def describe_cluster(self) -> dict[str, object]:
            await asyncio.Event().wait()  # never answers
            raise AssertionError

    cluster = _Stalls(3)
    monkeypatch.setattr(admin, "new_admin", lambda *a, **kw: cluster)
    monkeypatch.setattr(admin, "BROKER_COUNT_TIMEOUT_S", 0.05)
    assert await admin.ensure_topics("127.0.0.1:1", {"a": (4, {})}) == ["a"]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
