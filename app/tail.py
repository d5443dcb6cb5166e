"""`kappa tail`: print a topic's records as JSON lines (how `make run` shows closed windows)."""

from __future__ import annotations

import json
import sys

from app import command_loop
from app.admin import existing_topics, wait_for_broker
from app.kafka_clients import new_consumer
from app.settings import Settings
from app.topic_reader import TopicMissing
from app.topology import version_suffix


def format_record(msg: object, whole: bool = False) -> str:
    """The value if it is a JSON object, else (or if `whole`) a JSON object describing the
    record: partition, offset, timestamp, key, value and headers (how DLQ reasons show)."""
    value = getattr(msg, "value", None)
    if not whole:
        try:
            parsed = json.loads(value) if value is not None else None
            if isinstance(parsed, dict):
                return json.dumps(parsed, separators=(",", ":"))
        except ValueError:
            pass
    return json.dumps(
        {
            "partition": getattr(msg, "partition", None),
            "offset": getattr(msg, "offset", None),
            "timestamp": getattr(msg, "timestamp", None),
            "key": _text(getattr(msg, "key", None)),
            "value": _text(value),
            "headers": {k: _text(v) for k, v in getattr(msg, "headers", ()) or ()},
        }
    )


def _text(raw: bytes | None) -> str | None:
    """Bytes as text; None (a null key, a tombstone, a null header) stays None, shown as
    null, while empty bytes are the empty text."""
    return None if raw is None else raw.decode("utf-8", "replace")


def missing_topic_hint(topic: str, prefix: str, existing: set[str]) -> str:
    """What a user who named a missing topic may have meant: the prefixed name, or the topic
    of a version other than 1 (its outputs carry `.vN`)."""
    prefixed = prefix + topic if prefix and not topic.startswith(prefix) else None
    if prefixed in existing or (prefixed and not _of_versions(prefixed, existing)):
        return f" (did you mean {prefixed}? names are used as given)"
    versions = _of_versions(prefixed or topic, existing) or _of_versions(topic, existing)
    if versions:
        return f" (versions other than 1 have their own: {', '.join(versions)})"
    return ""


def _of_versions(topic: str, existing: set[str]) -> list[str]:
    """`topic`'s names in versions other than 1 (`topic.vN`), by version."""
    found = {n: t for t in existing for base, n in [version_suffix(t)] if base == topic and n}
    return [found[n] for n in sorted(found)]


async def tail(
    settings: Settings, topic: str, follow: bool, limit: int | None, whole: bool = False
) -> int:
    await wait_for_broker(settings.kafka)
    # Subscribing to a missing topic would create it on brokers that auto-create (the
    # embedded one does): a typo or a forgotten prefix would leave a stray empty topic.
    existing = await existing_topics(settings.kafka)
    if topic not in existing:
        hint = missing_topic_hint(topic, settings.topic_prefix, existing)
        raise TopicMissing(f"topic {topic} does not exist{hint}")
    consumer = new_consumer(
        settings.kafka,
        topic,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    n = 0
    try:
        idle = 0
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=1000)
            if not batches:
                idle += 1
                if not follow and idle >= 4:
                    return n
                continue
            idle = 0
            for records in batches.values():
                for msg in records:
                    sys.stdout.write(format_record(msg, whole) + "\n")
                    n += 1
                    if limit is not None and n >= limit:
                        sys.stdout.flush()
                        return n
            sys.stdout.flush()
    finally:
        await consumer.stop()


def run_tail(
    settings: Settings, topic: str, follow: bool, limit: int | None, whole: bool = False
) -> int:
    # Ctrl-C or SIGTERM is how `tail -f` is meant to end: an orderly stop, exit 0 (as the
    # broker, the demo and a worker).
    with command_loop.stop_is_the_end():
        command_loop.run(tail(settings, topic, follow, limit, whole))
    return 0
