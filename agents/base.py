"""The contract between a pipeline and the runtimes that feed it (live worker, replay)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from tables.partition_state import PartitionState

# A str as a JSON string (ASCII, escaped): for the outputs formatted directly, not by json.dumps.
json_str = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def json_number(x: float | None) -> str:
    """A float as JSON: repr, or null for None and a non-finite value."""
    return repr(x) if x is not None and math.isfinite(x) else "null"


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
    @property
    def headers(self) -> Sequence[tuple[str, bytes]] | None: ...


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
    # The records of one send to this record's topic and partition must land in the order
    # given, each only after those before it (parts of one report: see agents/window_reports).
    in_order: bool = False


@dataclass(slots=True)
class BatchCounts:
    """What a batch did, for metrics and replay summaries."""

    events: int = 0
    skipped: int = 0
    dlq: int = 0
    late: int = 0
    windows_closed: int = 0  # emitted final: the watermark passed them
    windows_provisional: int = 0  # emitted still open, by the flush at a bounded replay's end
    anomalies: int = 0  # trend points flagged as anomalies
    quiet: int = 0  # silences said (products gone quiet)
    dlq_reasons: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class BatchOutput:
    records: list[OutRecord] = field(default_factory=list)
    counts: BatchCounts = field(default_factory=BatchCounts)

    def add_dead_letter(self, topic: str, rec: Record, reason: str, detail: str = "") -> None:
        """Send `rec` to the DLQ `topic` (see `dead_letter`) and count it under `reason`."""
        self.records.append(dead_letter(topic, rec, reason, detail))
        self.counts.dlq += 1
        self.counts.dlq_reasons[reason] = self.counts.dlq_reasons.get(reason, 0) + 1

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
        c.anomalies += o.anomalies
        c.quiet += o.quiet
        for reason, n in o.dlq_reasons.items():
            c.dlq_reasons[reason] = c.dlq_reasons.get(reason, 0) + n


def unapplied(records: Sequence[Record], applied: int, counts: BatchCounts) -> Iterator[Record]:
    """The records after `applied` (a state's applied offset), counted as events; those at or
    before it (re-delivered after a restart) counted as skipped."""
    for rec in records:
        if rec.offset <= applied:
            counts.skipped += 1
            continue
        counts.events += 1
        yield rec


class Pipeline(Protocol):
    """A named processing step over one source topic, partition by partition."""

    name: str
    source: str  # logical source topic
    outputs: tuple[str, ...]  # logical output topics (created by `kappa topics` and by workers)
    dlq: str  # logical topic (one of `outputs`) for records it cannot process

    def process(self, state: PartitionState, records: Sequence[Record]) -> BatchOutput:
        """Apply one partition's batch (offset order) to `state` (staged, not yet committed)."""
        ...

    def flush(self, state: PartitionState) -> BatchOutput:
        """Close everything still open (end of a bounded replay)."""
        ...


def dead_letter(topic: str, rec: Record, reason: str, detail: str = "") -> OutRecord:
    """A DLQ copy of `rec`: its original bytes, the reason (a short stable label) and detail
    in headers; the runtime adds the source position."""
    headers = [("kappa.error", reason.encode())]
    if detail:
        headers.append(("kappa.error.detail", detail.encode()[:512]))
    return OutRecord(topic, rec.key, rec.value, rec.timestamp, headers, rec.offset)


def source_headers(topic: str, partition: int, offset: int) -> Headers:
    """Where a record came from: attached to DLQ and late records so they can be traced."""
    return [
        ("kappa.source.topic", topic.encode()),
        ("kappa.source.partition", str(partition).encode()),
        ("kappa.source.offset", str(offset).encode()),
    ]


# Kafka's record format v2: a record batch's header, and a bound on one record's own framing
# (length, attributes, timestamp and offset deltas, key and value lengths, header count).
_BATCH_OVERHEAD = 61
_RECORD_OVERHEAD = 40
_HEADER_OVERHEAD = 10  # a header's key and value lengths
MIN_COPY_BYTES = 4096  # always room for the reason and source headers
TRUNCATED_VALUE = "kappa.truncated.value"
TRUNCATED_KEY = "kappa.truncated.key"


def record_bytes_bound(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    """An upper bound on the size of a record batch holding just this record (bytes), which
    is what a broker's `max.message.bytes` limits."""
    framing = sum(len(k.encode()) + len(v) + _HEADER_OVERHEAD for k, v in headers)
    return _BATCH_OVERHEAD + _RECORD_OVERHEAD + len(key or b"") + len(value or b"") + framing


def fit_copy(
    key: bytes | None, value: bytes | None, headers: Headers, max_bytes: int
) -> tuple[bytes | None, bytes | None, Headers]:
    """A DLQ or late copy of a source record that a broker limiting records to `max_bytes`
    accepts: a copy it refused would be retried forever and stall the partition.

    What does not fit is cut: the value first (its first bytes kept), then the key, each noted
    in a header with its original length. The source headers still point at the whole record,
    which stays in the source topic for as long as it is retained.
    """
    if record_bytes_bound(key, value, headers) <= max_bytes:
        return key, value, headers
    if value:
        cut = [*headers, (TRUNCATED_VALUE, str(len(value)).encode())]
        room = max_bytes - record_bytes_bound(key, b"", cut)
        if room >= 0:
            return key, value[:room], cut
    headers = [*headers, (TRUNCATED_KEY, str(len(key or b"")).encode())]
    if record_bytes_bound(None, value, headers) <= max_bytes:
        return None, value, headers
    headers.append((TRUNCATED_VALUE, str(len(value or b"")).encode()))
    room = max(0, max_bytes - record_bytes_bound(None, b"", headers))
    return None, (value or b"")[:room], headers
