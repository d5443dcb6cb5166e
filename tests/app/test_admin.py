"""Topic administration logic that needs no broker (the rest: tests/integration)."""

from __future__ import annotations

import asyncio

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
