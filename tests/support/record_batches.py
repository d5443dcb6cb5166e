"""Kafka record batches built as a producer would (record format v2, no compression)."""

from __future__ import annotations

from aiokafka.record.default_records import DefaultRecordBatchBuilder


def batch_builder(batch_size: int = 1 << 20) -> DefaultRecordBatchBuilder:
    return DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=batch_size,
    )
