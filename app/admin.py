"""Topic administration and broker reachability, shared by every command."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Collection, Iterator
from typing import TYPE_CHECKING

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError, for_code

from app.kafka_clients import Conn, connection, new_admin
from app.settings import ConfigError

if TYPE_CHECKING:
    from app.topology import Topology

log = logging.getLogger(__name__)

# Sources and outputs keep every record. Kafka deletes a segment once its newest record
# *timestamp* is older than `retention.ms` (7 days by default), and Kappa's outputs carry event
# time: a backfill over older history would see its outputs (and the `orders.by-user` forwards
# its user-totals stage has yet to read) deleted minutes after they are written. A replay also
# needs the sources from offset zero.
KEEP_FOREVER = {"retention.ms": "-1"}

# Brokers from Kafka 3.6 refuse a record stamped further from their clock than these topic
# configs allow (KIP-937; Kafka 4.0 limits the future to one hour by default). Kappa stamps its
# outputs with event time (a window's end - 1, a user's latest order), so a far-future event, or
# a replay over older history, would be refused, and a refused write stops the worker.
TIMESTAMP_LIMITS = ("message.timestamp.before.max.ms", "message.timestamp.after.max.ms")
NO_LIMIT_MS = str(2**63 - 1)  # Kafka's Long.MAX_VALUE: no limit


class BrokerUnreachable(RuntimeError):
    """The configured broker did not answer (one-line message)."""


async def wait_for_broker(
    bootstrap: Conn,
    timeout_s: float | None = 30.0,
    *,
    max_delay_s: float = 5.0,
    on_wait: Callable[[str], None] | None = None,
    attempt_timeout_ms: int = 5000,
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
        with quiet_aiokafka():
            admin = new_admin(bootstrap, request_timeout_ms=attempt_timeout_ms)
            try:
                await admin.start()
                await admin.list_topics()
                return
            except (KafkaConnectionError, KafkaError, OSError) as e:
                last = type(e).__name__
            finally:
                await admin.close()
        if deadline is not None and loop.time() + delay > deadline:
            raise BrokerUnreachable(await _unreachable(bootstrap, last))
        if on_wait is not None:
            on_wait(last)
            on_wait = None
        await asyncio.sleep(delay)
        delay = min(delay * 2, max_delay_s)


async def _unreachable(bootstrap: Conn, error: str) -> str:
    """Why no broker answered, in one line: nothing listens at the address, or something does
    but says no Kafka (a broker stopped or overloaded, or a TLS listener spoken to in plain)."""
    conn = connection(bootstrap)
    check = "check KAPPA_SECURITY_PROTOCOL and its settings"
    secured = conn.security_protocol != "PLAINTEXT"
    if await accepts_connections(conn.bootstrap):
        protocol = (
            check if secured else "if its listener wants TLS or SASL, set KAPPA_SECURITY_PROTOCOL"
        )
        return (
            f"the Kafka broker at {bootstrap} accepts connections but does not answer "
            f"({error}): it may be stopped, frozen or overloaded, or advertise an address "
            f"(advertised.listeners) this host cannot reach; {protocol}"
        )
    hint = f" or {check}" if secured else ""
    return (
        f"cannot reach the Kafka broker at {bootstrap} ({error}); "
        f"start it with `kappa broker` or set KAPPA_BROKER{hint}"
    )


async def accepts_connections(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether any of the bootstrap addresses (`host:port,...`) accepts a TCP connection."""
    for address in bootstrap.split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(host.strip("[]"), int(port)), timeout_s
            )
        except (OSError, ValueError, OverflowError, TimeoutError):  # refused, unparsable
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


@contextlib.contextmanager
def quiet_aiokafka() -> Iterator[None]:
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
    try:
        await admin.start()  # inside: stopped even if cancelled while starting
        return set(await admin.list_topics())
    finally:
        await admin.close()


async def ensure_version_topics(bootstrap: Conn, topology: Topology) -> list[str]:
    """Create the version's missing topics (sources, outputs, changelogs); return those created.
    Outputs are created without timestamp limits where the broker has them."""
    return await ensure_topics(
        bootstrap,
        topology.topic_spec(),
        topology.settings.replication,
        event_time=topology.output_topics(),
    )


async def check_then_create_version_topics(
    bootstrap: Conn, topology: Topology, registry: str
) -> list[str]:
    """`kappa topics` and `kappa worker`: refuse the version's topics that exist (its sources
    among them) with another partition count than KAPPA_PARTITIONS, or changelogs (and the
    `registry` topic) that are not compacted, before creating the missing ones, so that a
    refusal leaves no topic behind; return those created. Checked again if some were created:
    another process may have made one of them meanwhile, with its own settings."""
    expected = topology.settings.partitions

    async def check() -> None:
        await require_partitions(bootstrap, list(topology.all_topics()), expected)
        await require_compacted(bootstrap, [*topology.compacted_topics(), registry])

    await check()  # those that exist: the missing ones are created as required
    created = await ensure_version_topics(bootstrap, topology)
    if created:
        await check()
    return created


async def ensure_topics(
    bootstrap: Conn,
    topics: dict[str, tuple[int, dict[str, str]]],
    replication: int = 1,
    event_time: Collection[str] = (),
) -> list[str]:
    """Create missing topics (name → (partitions, config)); return the ones created.

    Topics are always created explicitly: brokers that auto-create use their own partition
    count, and changelogs must match their source's partitions. The `event_time` topics also
    get `TIMESTAMP_LIMITS` lifted, if the broker knows them (older brokers refuse unknown
    topic configs).
    """
    admin = new_admin(bootstrap)
    try:
        await admin.start()  # inside: stopped even if cancelled while starting
        existing = set(await admin.list_topics())
        missing = {name: spec for name, spec in topics.items() if name not in existing}
        if not missing:
            return []
        lifted: dict[str, str] = {}
        if any(name in missing for name in event_time):
            lifted = no_timestamp_limits(await _broker_config_names(admin))
        new = [
            NewTopic(
                name,
                num_partitions=parts,
                replication_factor=replication,
                topic_configs={**config, **lifted} if name in event_time else config,
            )
            for name, (parts, config) in missing.items()
        ]
        try:
            response = await admin.create_topics(new)
        except TopicAlreadyExistsError:
            return []
        for err in response.topic_errors:
            code = err[1]
            if code and for_code(code) is not TopicAlreadyExistsError:
                raise KafkaError(f"creating topic {err[0]} failed: {for_code(code).__name__}")
        warning = replication_warning(replication, await _broker_count(admin), len(new))
        if warning:
            log.warning(warning)
        return [t.name for t in new]
    finally:
        await admin.close()


def replication_warning(replication: int, brokers: int, created: int) -> str | None:
    """A line when topics were just created unreplicated on a cluster that could replicate them:
    KAPPA_REPLICATION's default (1) suits the one-broker dev broker, not a production cluster."""
    if replication != 1 or brokers < 2:
        return None
    return (
        f"created {created} topic(s) with replication factor 1 on a cluster of {brokers} "
        "brokers: losing one broker loses their records, changelogs included; set "
        "KAPPA_REPLICATION (3 is usual) before creating topics"
    )


BROKER_COUNT_TIMEOUT_S = 5.0


async def _broker_count(admin: AIOKafkaAdminClient) -> int:
    """How many brokers the cluster has (0 if it will not say soon): only for a warning, so
    nothing here may fail or hold up the topics just created."""
    try:
        cluster = await asyncio.wait_for(admin.describe_cluster(), BROKER_COUNT_TIMEOUT_S)
        return len(cluster["brokers"])
    except (KafkaError, LookupError, TypeError, TimeoutError, OSError):
        return 0


def no_timestamp_limits(broker_config_names: Collection[str]) -> dict[str, str]:
    """The topic configs that let records of any timestamp in, of those this broker knows
    (it reports `log.<name>` among its own configs)."""
    return {name: NO_LIMIT_MS for name in TIMESTAMP_LIMITS if f"log.{name}" in broker_config_names}


async def _broker_config_names(admin: AIOKafkaAdminClient) -> set[str]:
    """The names of a broker's configs (Apache Kafka reports all of them; none if it won't say)."""
    try:
        cluster = await admin.describe_cluster()
        broker_id = str(cluster["brokers"][0]["node_id"])
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.BROKER, broker_id)]
        )
    except (KafkaError, LookupError) as e:  # e.g. no DescribeConfigs on the cluster
        log.info("cannot read the broker's configs (%s)", type(e).__name__)
        return set()
    names: set[str] = set()
    for response in responses:
        for error_code, _, _, _, entries, *_ in response.resources:
            if not error_code:
                names.update(entry[0] for entry in entries)
    return names


async def partition_counts(bootstrap: Conn, topics: list[str]) -> dict[str, int]:
    """Partitions per existing topic (missing topics are absent from the result)."""
    admin = new_admin(bootstrap)
    try:
        await admin.start()  # inside: stopped even if cancelled while starting
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
        hint = ""
        if len(set(wrong.values())) == 1 and len(wrong) == len(counts):  # all of them agree
            hint = f": set KAPPA_PARTITIONS={next(iter(wrong.values()))} to use them"
        raise ConfigError(
            f"topics must have KAPPA_PARTITIONS={expected} partitions, but {desc}{hint}"
        )


async def topic_config(bootstrap: Conn, topics: list[str], name: str) -> dict[str, str]:
    """Each topic's config value `name`, where the broker reports one (Apache Kafka reports
    every topic's, its default included; the dev broker only those set explicitly)."""
    configs = await topic_configs(bootstrap, topics, [name])
    return {t: cfg[name] for t, cfg in configs.items() if name in cfg}


async def topic_configs(
    bootstrap: Conn, topics: list[str], names: Collection[str]
) -> dict[str, dict[str, str]]:
    """Each topic's values of the configs `names` that the broker reports, in one request."""
    admin = new_admin(bootstrap)
    try:
        await admin.start()  # inside: stopped even if cancelled while starting
        responses = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, t) for t in topics]
        )
    finally:
        await admin.close()
    found: dict[str, dict[str, str]] = {}
    for response in responses:
        for error_code, _, _, topic, entries, *_ in response.resources:
            for entry in entries if not error_code else ():
                if entry[0] in names and entry[1] is not None:
                    found.setdefault(topic, {})[entry[0]] = entry[1]
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
    return await _warn_about(
        bootstrap,
        topics,
        ["retention.ms"],
        lambda v: v.lstrip("-").isdigit() and int(v) >= 0,
        "delete records older than retention.ms by their timestamp (event time for outputs): a "
        "replay cannot reach deleted source records, and a backfill's older outputs are deleted "
        "minutes after they are written; set retention.ms=-1 on them",
    )


async def require_compacted(bootstrap: Conn, topics: list[str]) -> None:
    """Refuse changelogs (and the version registry) that delete records by age or size: a
    restore would read back part of the state, a registry would forget its versions, silently.
    `compact,delete` passes only with no retention limit. What the broker does not report
    (a missing topic; on the dev broker, a config never set) passes, and so does everything
    when it will not say (no DescribeConfigs permission): a warning then says so."""
    try:
        configs = await topic_configs(bootstrap, topics, _RETENTION)
    except KafkaError as e:
        log.warning(
            "cannot read the changelogs' cleanup.policy (%s): not checked that they are compacted",
            type(e).__name__,
        )
        return
    wrong = {t: cfg for t, cfg in configs.items() if not _keeps_latest_per_key(cfg)}
    if wrong:
        desc = ", ".join(
            f"{t} ({', '.join(f'{n}={v}' for n, v in sorted(cfg.items()))})"
            for t, cfg in sorted(wrong.items())
        )
        raise ConfigError(
            f"{desc} must keep every key's latest record: set cleanup.policy=compact on them "
            "(created by someone else, or changed since Kappa created them)"
        )


_RETENTION = ("cleanup.policy", "retention.ms", "retention.bytes")


def _keeps_latest_per_key(config: dict[str, str]) -> bool:
    policy = config.get("cleanup.policy", "compact").split(",")
    if "compact" not in policy:
        return False
    unlimited = ("-1", None)
    return "delete" not in policy or (
        config.get("retention.ms") in unlimited and config.get("retention.bytes") in unlimited
    )


async def warn_timestamp_limits(bootstrap: Conn, topics: list[str]) -> list[str]:
    """Say (one line) which output `topics` refuse records stamped far from the broker's clock
    (`TIMESTAMP_LIMITS`): created before Kappa lifted them, or by someone else. Returns them.
    Only a warning, as for retention: an operator may mean it."""
    return await _warn_about(
        bootstrap,
        topics,
        TIMESTAMP_LIMITS,
        lambda v: v.isdigit() and int(v) < int(NO_LIMIT_MS),
        "refuse records stamped that far from the broker's clock, and Kappa stamps its outputs "
        "with event time: an output of a far-future event, or of a replay over older history, "
        f"would be refused and stop the worker; set {' and '.join(TIMESTAMP_LIMITS)} to "
        f"{NO_LIMIT_MS} on them",
    )


async def _warn_about(
    bootstrap: Conn,
    topics: list[str],
    names: Collection[str],
    offends: Callable[[str], bool],
    consequence: str,
) -> list[str]:
    """Log one line naming the `topics` whose configs `names` have values that `offends`, and
    `consequence`; return those topics. A broker that will not say gets a line of its own."""
    try:
        configs = await topic_configs(bootstrap, topics, names)
    except KafkaError as e:
        log.warning("cannot read the topics' %s (%s)", " and ".join(names), type(e).__name__)
        return []
    found = {
        topic: [f"{n}={v}" for n, v in sorted(cfg.items()) if offends(v)]
        for topic, cfg in configs.items()
    }
    found = {topic: values for topic, values in found.items() if values}
    if found:
        named = ", ".join(f"{t} ({', '.join(v)})" for t, v in sorted(found.items()))
        log.warning("%s %s", named, consequence)
    return sorted(found)


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
