"""That an output partition a sink follows is still the log it has been reading.

A topic deleted and made anew under a running sink (a restarted dev broker and its workers, or
a topic recreated by hand) keeps its name, and aiokafka knows no topic ids: once the new log has
passed the sink's position, its records arrive as if they followed the old ones. So before a
sink finishes a file, the record it read just before the file's first line (its *anchor*) is
read again: the same record at the same offset means the same log; anything else means the
file's lines may come from two logs, and the file is not finished. A partition the topic no
longer has (made anew with fewer) holds no anchor either: partitions are never taken away.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import OffsetOutOfRangeError

from app.kafka_clients import Conn, stop_consumer
from app.topic_reader import bounded_consumer

POLL_MS = 200


def vanished(topic: str, partitions: int) -> str:
    """What a partition past a topic's `partitions` says: Kafka never takes partitions away,
    so the topic was made anew."""
    return f"no longer exists ({topic} has {partitions} partition{'' if partitions == 1 else 's'})"


@dataclass(frozen=True, slots=True)
class Seen:
    """What identifies a record read: where it is and what it holds."""

    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None

    @classmethod
    def of(cls, r: ConsumerRecord) -> Seen:
        return cls(r.offset, r.timestamp, r.key, r.value)

    def differs(self, r: ConsumerRecord) -> str | None:
        """What a record read again at this offset says, if it is not this one."""
        if (r.timestamp, r.key, r.value) != (self.timestamp, self.key, self.value):
            return f"holds another record at offset {self.offset} than the one the sink read"
        return None


class LogIdentity:
    """Reads anchors again, with a consumer of its own (the sink's keeps its position)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.consumer: AIOKafkaConsumer | None = None

    async def differences(self, anchors: dict[TopicPartition, Seen]) -> dict[TopicPartition, str]:
        """Each partition whose log no longer holds its anchor, and how. Waits until every
        anchor is read again (cancel it, e.g. with a timeout, while the broker is away)."""
        if not anchors:
            return {}
        consumer = await self._consumer()
        consumer.assign(list(anchors))  # a new assignment: nothing paused, nothing fetched
        differ: dict[TopicPartition, str] = {}
        pending = dict(anchors)
        # A partition gone is never fetched, nor said to be out of range: asked of the metadata
        # (fresh: it is cached for minutes), where a topic not there says nothing yet.
        if await consumer._client.force_metadata_update():
            for tp in anchors:
                known = consumer.partitions_for_topic(tp.topic)
                if known and tp.partition not in known:
                    differ[tp] = vanished(tp.topic, len(known))
                    del pending[tp]
            if differ:
                consumer.assign(list(pending))  # none fetched, nor its position asked for
        for tp, seen in pending.items():
            consumer.seek(tp, seen.offset)
        while pending:
            try:
                batches = await consumer.getmany(*pending, timeout_ms=POLL_MS)
            except OffsetOutOfRangeError as e:
                for tp in e.args[0]:
                    if tp in pending:
                        differ[tp] = f"no longer holds offset {pending.pop(tp).offset}"
                continue
            for tp, records in batches.items():
                seen = pending.get(tp)
                if seen is None or not records:
                    continue
                first = records[0]  # the first record at or after the anchor's offset
                if first.offset != seen.offset:
                    differ[tp] = f"holds no record at offset {seen.offset}, where the sink read one"
                elif (what := seen.differs(first)) is not None:
                    differ[tp] = what
                del pending[tp]
                consumer.pause(tp)
            for tp in list(pending):  # past the anchor without a record: only a marker there
                if tp not in batches and await consumer.position(tp) > pending[tp].offset:
                    differ[tp] = f"holds no record at offset {pending.pop(tp).offset}"
        return differ

    async def _consumer(self) -> AIOKafkaConsumer:
        if self.consumer is None:
            consumer = bounded_consumer(
                self.conn, isolation_level="read_committed", auto_offset_reset="none"
            )
            try:
                await consumer.start()
            except BaseException:
                await stop_consumer(consumer)
                raise
            self.consumer = consumer
        return self.consumer

    async def close(self) -> None:
        if self.consumer is not None:
            consumer, self.consumer = self.consumer, None
            await stop_consumer(consumer)
