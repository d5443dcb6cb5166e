"""`kappa tail`: print a topic's records as JSON lines (how `make run` shows closed windows)."""

from __future__ import annotations

import json
import sys

from app import command_loop
from app.admin import existing_topics, wait_for_broker
from app.kafka_clients import new_consumer
from app.settings import Settings
from app.topic_reader import TopicMissing


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
            "key": (getattr(msg, "key", None) or b"").decode("utf-8", "replace"),
            "value": (value or b"").decode("utf-8", "replace"),
            "headers": {
                k: v.decode("utf-8", "replace") for k, v in getattr(msg, "headers", ()) or ()
            },
        }
    )


async def tail(
    settings: Settings, topic: str, follow: bool, limit: int | None, whole: bool = False
) -> int:
    await wait_for_broker(settings.kafka)
    # Subscribing to a missing topic would create it on brokers that auto-create (the
    # embedded one does): a typo or a forgotten prefix would leave a stray empty topic.
    if topic not in await existing_topics(settings.kafka):
        prefix = settings.topic_prefix
        hint = ""
        if prefix and not topic.startswith(prefix):
            hint = f" (did you mean {prefix}{topic}? names are used as given)"
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
