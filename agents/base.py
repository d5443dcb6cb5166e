"""The contract between a pipeline and the runtimes that feed it (live worker, replay)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tables.partition_state import PartitionState

Headers = list[tuple[str, bytes]]


class Record(Protocol):
    """What a pipeline reads of a consumed record (all of one source partition, in offset
    order). aiokafka's `ConsumerRecord`, its raw fetched records (replay) and `SourceRecord`
    all fit; where the batch came from (topic, partition) is the runtime's to know."""

    @property
    def offset(self) -> int: ...
    @property
    def timestamp(self) -> int | None: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...


@dataclass(slots=True)
class SourceRecord:
    """One consumed Kafka record, independent of the client library that read it."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)


@dataclass(slots=True)
class OutRecord:
    """A record to produce. `topic` is logical (`orders.dlq`); the runtime maps it to the
    physical topic of the version being run (`orders.dlq.v2`)."""

    topic: str
    key: bytes | None
    value: bytes | None
    timestamp: int | None = None
    headers: Headers = field(default_factory=list)
    # Set on records that pass a source record on (DLQ, late): the runtime adds the
    # kappa.source.{topic,partition,offset} headers, so they can be traced back.
    source_offset: int | None = None


@dataclass(slots=True)
class BatchCounts:
    """What a batch did, for metrics and replay summaries."""

    events: int = 0
    skipped: int = 0
    dlq: int = 0
    late: int = 0
    windows_closed: int = 0  # emitted final: the watermark passed them
    windows_provisional: int = 0  # emitted still open, by the flush at a bounded replay's end
    dlq_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class BatchOutput:
    records: list[OutRecord] = field(default_factory=list)
    counts: BatchCounts = field(default_factory=BatchCounts)

    def extend(self, other: BatchOutput) -> None:
        """Append another batch's output (consecutive batches of one partition)."""
        self.records.extend(other.records)
        c, o = self.counts, other.counts
        c.events += o.events
        c.skipped += o.skipped
        c.dlq += o.dlq
        c.late += o.late
        c.windows_closed += o.windows_closed
        c.windows_provisional += o.windows_provisional
        for reason, n in o.dlq_reasons.items():
            c.dlq_reasons[reason] = c.dlq_reasons.get(reason, 0) + n


class Pipeline(Protocol):
    """A named processing step over one source topic, partition by partition."""

    name: str
    source: str  # logical source topic
    outputs: tuple[str, ...]  # logical output topics (created by `kappa topics create`)

    def process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        """Apply one partition's batch (offset order) to `state` (staged, not yet committed)."""
        ...

    def flush(self, state: PartitionState) -> BatchOutput:
        """Close everything still open (end of a bounded replay)."""
        ...


def source_headers(topic: str, partition: int, offset: int) -> Headers:
    """Where a record came from: attached to DLQ and late records so they can be traced."""
    return [
        ("kappa.source.topic", topic.encode()),
        ("kappa.source.partition", str(partition).encode()),
        ("kappa.source.offset", str(offset).encode()),
    ]
