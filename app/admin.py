"""Topic administration and broker reachability, shared by every command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator

from aiokafka.admin import NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from app.kafka_clients import Conn, connection, new_admin
from app.settings import ConfigError

log = logging.getLogger(__name__)

# Sources and outputs keep every record. Kafka deletes a segment once its newest record
# *timestamp* is older than `retention.ms` (7 days by default), and Kappa's outputs carry event
# time: a backfill over older history would see its outputs (and the `orders.by-user` forwards
# its user-totals stage has yet to read) deleted minutes after they are written. A replay also
# needs the sources from offset zero.
KEEP_FOREVER = {"retention.ms": "-1"}


class BrokerUnreachable(RuntimeError):
    """The configured broker did not answer (one-line message)."""


async def wait_for_broker(
    bootstrap: Conn,
    timeout_s: float | None = 30.0,
    *,
    max_delay_s: float = 5.0,
    on_wait: Callable[[str], None] | None = None,
) -> None:
    """Return once the broker answers a metadata request; retry with backoff until timeout.

    `timeout_s=None` retries forever (delays double from 0.2 s up to `max_delay_s`);
    `on_wait(error name)` is called once, at the first failed attempt. aiokafka's own
    per-attempt connection errors are kept out of the log: the caller reports one line.
    """
    loop = asyncio.get_running_loop()
    deadline = None if timeout_s is None else loop.time() + timeout_s
    delay = 0.2
    last = ""
    while True:
        with _quiet_aiokafka():
            admin = new_admin(bootstrap, request_timeout_ms=5000)
            try:
                await admin.start()
                await admin.list_topics()
                return
            except (KafkaConnectionError, KafkaError, OSError) as e:
                last = type(e).__name__
            finally:
                await admin.close()
        if deadline is not None and loop.time() + delay > deadline:
            secured = connection(bootstrap).security_protocol != "PLAINTEXT"
            hint = " or check KAPPA_SECURITY_PROTOCOL and its settings" if secured else ""
            raise BrokerUnreachable(
                f"cannot reach the Kafka broker at {bootstrap} ({last}); "
                f"start it with `kappa broker` or set KAPPA_BROKER{hint}"
            )
        if on_wait is not None:
            on_wait(last)
            on_wait = None
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


@contextlib.contextmanager
def _quiet_aiokafka() -> Iterator[None]:
    """Silence aiokafka's error log (one line per failed connection attempt) for a while."""
    logger = logging.getLogger("aiokafka")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


async def existing_topics(bootstrap: Conn) -> set[str]:
    """The broker's topic names (a metadata request for all topics: creates nothing)."""
    admin = new_admin(bootstrap)
    await admin.start()
    try:
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def ensure_topics(
    bootstrap: Conn, topics: dict[str, tuple[int, dict[str, str]]], replication: int = 1
) -> list[str]:
    """Create missing topics (name → (partitions, config)); return the ones created.

    Topics are always created explicitly: brokers that auto-create use their own partition
    count, and changelogs must match their source's partitions.
    """
    admin = new_admin(bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        new = [
            NewTopic(
                name, num_partitions=parts, replication_factor=replication, topic_configs=config
            )
            for name, (parts, config) in topics.items()
            if name not in existing
        ]
        if not new:
            return []
        try:
            response = await admin.create_topics(new)
        except TopicAlreadyExistsError:
            return []
        for err in response.topic_errors:
            code = err[1]
            if code and for_code(code) is not TopicAlreadyExistsError:
                raise KafkaError(f"creating topic {err[0]} failed: {for_code(code).__name__}")
        return [t.name for t in new]
    finally:
        await admin.close()


async def partition_counts(bootstrap: Conn, topics: list[str]) -> dict[str, int]:
    """Partitions per existing topic (missing topics are absent from the result)."""
    admin = new_admin(bootstrap)
    await admin.start()
    try:
        # Only topics that exist: a metadata request naming a missing topic creates it on a
        # broker that auto-creates topics (the embedded one does).
        existing = set(await admin.list_topics())
        named = [t for t in topics if t in existing]
        described = await admin.describe_topics(named) if named else []
    finally:
        await admin.close()
    return {
        d["topic"]: len(d["partitions"])
        for d in described
        if d.get("error_code", 0) == 0 and d["partitions"]
    }


async def require_partitions(bootstrap: Conn, topics: list[str], expected: int) -> None:
    """Refuse topics whose partition count is not `expected` (KAPPA_PARTITIONS): per-partition
    state, changelogs and outputs follow the source's partitioning one to one."""
    counts = await partition_counts(bootstrap, topics)
    wrong = {t: n for t, n in counts.items() if n != expected}
    if wrong:
        desc = ", ".join(f"{t} has {n}" for t, n in sorted(wrong.items()))
        raise ConfigError(f"topics must have KAPPA_PARTITIONS={expected} partitions, but {desc}")


async def topic_config(bootstrap: Conn, topics: list[str], name: str) -> dict[str, str]:
    """Each topic's config value `name`, where the broker reports one (Apache Kafka reports
    every topic's, its default included; the dev broker only those set explicitly)."""
    admin = new_admin(bootstrap)
    await admin.start()
    try:
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    finally:
        await admin.close()
    found: dict[str, str] = {}
    for response in responses:
        for error_code, _, _, topic, entries, *_ in response.resources:
            for entry in entries if not error_code else ():
                if entry[0] == name and entry[1] is not None:
                    found[topic] = entry[1]
    return found


async def max_message_bytes(bootstrap: Conn, topics: list[str]) -> dict[str, int]:
    """Each topic's `max.message.bytes`, where the broker reports one."""
    found: dict[str, int] = {}
    for topic, value in (await topic_config(bootstrap, topics, "max.message.bytes")).items():
        with contextlib.suppress(ValueError):
            found[topic] = int(value)
    return found


async def warn_time_retention(bootstrap: Conn, topics: list[str]) -> list[str]:
    """Say (one line) which of `topics` delete records by age: created before Kappa set
    `KEEP_FOREVER`, or by someone else. Returns them. Only a warning: an operator may mean it,
    and the broker may not tell (e.g. no DescribeConfigs permission)."""
    try:
        retention = await topic_config(bootstrap, topics, "retention.ms")
    except KafkaError as e:
        log.warning("cannot read the topics' retention.ms (%s)", type(e).__name__)
        return []
    finite = {t: v for t, v in retention.items() if v.lstrip("-").isdigit() and int(v) >= 0}
    if finite:
        log.warning(
            "%s delete records older than retention.ms by their timestamp (event time for "
            "outputs): a replay cannot reach deleted source records, and a backfill's older "
            "outputs are deleted minutes after they are written; set retention.ms=-1 on them",
            ", ".join(f"{t} (retention.ms={v})" for t, v in sorted(finite.items())),
        )
    return sorted(finite)


async def copy_max_bytes(bootstrap: Conn, limit: int, topics: list[str]) -> int:
    """`limit` (KAPPA_COPY_MAX_BYTES), lowered to the smallest `max.message.bytes` of the
    output `topics`: a DLQ or late copy the broker refused would stall its partition. If the
    broker will not say (e.g. no DescribeConfigs permission), `limit` stands."""
    try:
        reported = await max_message_bytes(bootstrap, topics)
    except KafkaError as e:
        log.warning("cannot read the output topics' max.message.bytes (%s)", type(e).__name__)
        return limit
    smallest = min(reported.items(), key=lambda item: item[1], default=None)
    if smallest is None or smallest[1] >= limit:
        return limit
    log.warning(
        "DLQ and late copies are cut to %d bytes, %s's max.message.bytes (KAPPA_COPY_MAX_BYTES=%d)",
        smallest[1],
        smallest[0],
        limit,
    )
    return smallest[1]
