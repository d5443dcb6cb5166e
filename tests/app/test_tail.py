"""`kappa tail` output, without a broker."""

from __future__ import annotations

import json

from aiokafka.structs import ConsumerRecord

from app.tail import format_record, missing_topic_hint


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


def test_a_null_key_value_or_header_shows_as_null_not_as_empty() -> None:
    """A DLQ copy of a record without a key read `"key": ""`, like one with an empty key."""
    record = ConsumerRecord(
        "orders.dlq", 0, 1, 0, 0, None, None, None, -1, -1, [("h", None), ("e", b"")]
    )  # fmt: skip
    assert json.loads(format_record(record, whole=True)) == {
        "partition": 0, "offset": 1, "timestamp": 0, "key": None, "value": None,
        "headers": {"h": None, "e": ""},
    }  # fmt: skip


def test_a_missing_topic_names_what_was_likely_meant() -> None:
    """After a promote and a drop of version 1, `orders.revenue-1m` is gone: the live
    version's outputs carry `.vN`."""
    existing = {"orders", "orders.revenue-1m.v5", "orders.revenue-1m.v12", "k.orders"}
    assert missing_topic_hint("orders.revenue-1m", "", existing) == (
        " (versions other than 1 have their own: orders.revenue-1m.v5, orders.revenue-1m.v12)"
    )
    assert missing_topic_hint("orders", "k.", existing) == (
        " (did you mean k.orders? names are used as given)"
    )
    assert missing_topic_hint("orders.dlq", "", existing) == ""
    assert missing_topic_hint("orders.revenue-1m", "k.", {"k.orders.revenue-1m.v2"}) == (
        " (versions other than 1 have their own: k.orders.revenue-1m.v2)"
    )
