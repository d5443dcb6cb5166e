"""A raw fetched record converts to the `ConsumerRecord` aiokafka itself would have built."""

from __future__ import annotations

from types import SimpleNamespace

from aiokafka import TopicPartition
from aiokafka.consumer.fetcher import PartitionRecords
from aiokafka.record.default_records import DefaultRecordBatch

from app.raw_records import consumer_record
from tests.support.record_batches import batch_builder


def test_consumer_record_is_what_aiokafka_builds() -> None:
    builder = batch_builder()
    builder.append(0, timestamp=1234, key=b"k", value=b"value", headers=[("h", b"1")])
    builder.append(1, timestamp=1235, key=None, value=None, headers=[])
    tp = TopicPartition("orders", 3)
    # aiokafka's own conversion, for a consumer without deserializers
    plain = SimpleNamespace(_key_deserializer=None, _value_deserializer=None)
    for raw in DefaultRecordBatch(bytes(builder.build())):
        assert consumer_record(tp, raw) == PartitionRecords._consumer_record(plain, tp, raw)
