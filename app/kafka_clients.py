"""The only place Kafka clients are created, so connection and security settings reach all.

Every aiokafka consumer, producer and admin client, and the faust app, get the same bootstrap
servers and TLS/SASL configuration from `KafkaConnection` (built from `KAPPA_*` settings).
Functions elsewhere take `Conn`: a `KafkaConnection`, or a plain `host:port` for plaintext
(tests and the embedded broker).
"""

from __future__ import annotations

import asyncio
import ssl
from dataclasses import dataclass, field
from typing import Any

import aiokafka.admin.client
import aiokafka.client
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context
from aiokafka.protocol.metadata import MetadataRequest

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


class MetadataRequestNoAutoCreate(MetadataRequest):
    """A metadata request that never creates the topics it names.

    aiokafka asks with allow_auto_topic_creation=true, so on a broker with
    auto.create.topics.enable (Apache Kafka's default) a sink or worker still reading a dropped
    version, or a mistyped topic, would make an empty topic with the broker's default partition
    count and cleanup policy. Kappa creates every topic itself; like Kafka Streams
    (allow.auto.create.topics=false), its clients only ask.
    """

    def __init__(
        self, topics: list[str] | None = None, allow_auto_topic_creation: bool | None = False
    ) -> None:
        super().__init__(topics, allow_auto_topic_creation)


# Every client Kappa makes (here, and faust's, which uses aiokafka's client) builds its
# metadata requests through these two names.
aiokafka.client.MetadataRequest = MetadataRequestNoAutoCreate
aiokafka.admin.client.MetadataRequest = MetadataRequestNoAutoCreate


@dataclass(frozen=True)
class KafkaConnection:
    bootstrap: str
    security_protocol: str = "PLAINTEXT"
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = field(default=None, repr=False)
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = field(default=None, repr=False)
    read_committed: bool = False  # consumers skip aborted transactions (exactly_once)

    def __str__(self) -> str:
        return self.bootstrap  # what messages show: never the credentials

    @property
    def uses_ssl(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.uses_ssl:
            return None
        return create_ssl_context(  # type: ignore[no-any-return]
            cafile=self.ssl_cafile,
            certfile=self.ssl_certfile,
            keyfile=self.ssl_keyfile,
            password=self.ssl_password,
        )

    def client_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every aiokafka client takes for connecting."""
        kw: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap,
            "security_protocol": self.security_protocol,
        }
        if self.uses_ssl:
            kw["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kw["sasl_mechanism"] = self.sasl_mechanism or "PLAIN"
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        return kw

    def faust_credentials(self) -> Any:
        """The same settings as faust's `broker_credentials` (None for plaintext)."""
        import faust

        if self.uses_sasl:
            return faust.SASLCredentials(
                username=self.sasl_username,
                password=self.sasl_password,
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism or "PLAIN",
            )
        if self.uses_ssl:
            return faust.SSLCredentials(self.ssl_context())
        return None


Conn = str | KafkaConnection


def connection(conn: Conn) -> KafkaConnection:
    return conn if isinstance(conn, KafkaConnection) else KafkaConnection(conn)


def new_consumer(conn: Conn, *topics: str, **kwargs: Any) -> AIOKafkaConsumer:
    c = connection(conn)
    if c.read_committed:
        kwargs.setdefault("isolation_level", "read_committed")
    return AIOKafkaConsumer(*topics, **c.client_kwargs(), **kwargs)


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """`consumer.stop()`, also right after its start: a group-less aiokafka consumer then
    cancels a task of its own that has not run yet and raises that CancelledError, which is
    not a cancellation of the task stopping it."""
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def new_producer(conn: Conn, **kwargs: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**connection(conn).client_kwargs(), **kwargs)


def new_admin(conn: Conn, **kwargs: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**connection(conn).client_kwargs(), **kwargs)
