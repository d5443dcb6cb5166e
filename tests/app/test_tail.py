"""`kappa tail` output, without a broker."""

from __future__ import annotations

import json

from aiokafka.structs import ConsumerRecord

from app.tail import format_record


def _dlq_record() -> ConsumerRecord:  # type: ignore[type-arg]
    return ConsumerRecord(
        "orders.dlq", 2, 7, 1_700_000_000_000, 0, b"p1", b'{"amount":"x"}', None, 14, 2,
        [("kappa.error", b"not_a_number")],
    )  # fmt: skip


def test_a_json_object_prints_as_its_value() -> None:
    assert format_record(_dlq_record()) == '{"amount":"x"}'


def test_whole_records_show_where_they_are_and_their_headers() -> None:
    assert json.loads(format_record(_dlq_record(), whole=True)) == {
        "partition": 2,
        "offset": 7,
        "timestamp": 1_700_000_000_000,
        "key": "p1",
        "value": '{"amount":"x"}',
        "headers": {"kappa.error": "not_a_number"},
    }
