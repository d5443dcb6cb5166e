"""Fetched records as aiokafka decoded them, without a `ConsumerRecord` per record.

aiokafka wraps every fetched record in a `ConsumerRecord` dataclass (about 1.5 µs each, a sixth
of a replay's CPU). A pipeline reads only offset, timestamp, key, value and headers, which the
records aiokafka's record-batch reader yields (its C extension's `DefaultRecord`) already carry.
A consumer created with `value_deserializer=RAW_RECORDS` gets those as they are; every other
consumer in the process is untouched.

This depends on aiokafka's fetcher internals (`PartitionRecords._consumer_record`, looked up
per record); aiokafka is pinned in pyproject.toml and `tests/integration/test_raw_records.py`
checks the hook against the installed version.
"""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.consumer import fetcher


class _RawRecordsMarker:
    """A value deserializer that marks a consumer as wanting raw records (identity if used)."""

    def __call__(self, value: bytes | None) -> bytes | None:
        return value

    def __repr__(self) -> str:
        return "RAW_RECORDS"


RAW_RECORDS = _RawRecordsMarker()


def _as_fetched(tp: Any, record: Any) -> Any:
    return record


def consumer_record(tp: Any, record: Any) -> ConsumerRecord:
    """The `ConsumerRecord` aiokafka would have built (no deserializers), for code that needs
    one from a raw record."""
    key, value = record.key, record.value
    return ConsumerRecord(
        tp.topic,
        tp.partition,
        record.offset,
        record.timestamp,
        record.timestamp_type,
        key,
        value,
        record.checksum,
        len(key) if key is not None else -1,
        len(value) if value is not None else -1,
        tuple(record.headers),
    )


class _PartitionRecords(fetcher.PartitionRecords):  # type: ignore[misc]
    """aiokafka's per-partition record iterator; for a RAW_RECORDS consumer it skips the
    per-record `ConsumerRecord` (batch CRC checks, aborted-transaction and control-batch
    filtering and offset bookkeeping stay aiokafka's own)."""

    def __init__(
        self,
        tp: Any,
        records: Any,
        aborted_transactions: Any,
        fetch_offset: int,
        key_deserializer: Any,
        value_deserializer: Any,
        *args: Any,
    ) -> None:
        super().__init__(
            tp,
            records,
            aborted_transactions,
            fetch_offset,
            key_deserializer,
            value_deserializer,
            *args,
        )
        if value_deserializer is RAW_RECORDS:
            self._consumer_record = _as_fetched


fetcher.PartitionRecords = _PartitionRecords
