"""The synthetic orders generator and the file reader: pure, no broker."""

from __future__ import annotations

import collections
import itertools
import json
from datetime import datetime
from pathlib import Path

import pytest

from app.orders_generator import (
    LATE_BEHIND_MS,
    ORDER_FIELDS,
    GeneratedRecord,
    GeneratorSpec,
    generate,
    read_file,
)

WINDOW_MS = 60_000
GRACE_MS = 10_000


def schema_violation(value: bytes) -> str | None:
    """Which orders-schema rule ``value`` breaks (None when it is a valid order).

    Written independently of the generator so the tests check it against the schema, not itself.
    """
    try:
        order = json.loads(value)
    except ValueError:
        return "not json"
    if not isinstance(order, dict):
        return "not an object"
    for field in ORDER_FIELDS:
        if field not in order:
            return f"missing {field}"
    for field in ("order_id", "user_id", "product_id", "category"):
        if not isinstance(order[field], str):
            return f"{field} not a string"
    amount = order["amount"]
    if isinstance(amount, str):
        try:
            amount = float(amount)
        except ValueError:
            return "amount not numeric"
    if isinstance(amount, bool) or not isinstance(amount, int | float):
        return "amount not numeric"
    if amount < 0:
        return "amount negative"
    quantity = order["quantity"]
    if isinstance(quantity, bool) or not isinstance(quantity, int):
        return "quantity not an int"
    if quantity < 1:
        return "quantity below 1"
    ts = order["ts"]
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
        except ValueError:
            return "ts unparseable"
        if parsed.tzinfo is None:
            return "ts without zone"
    elif isinstance(ts, bool) or not isinstance(ts, int):
        return "ts not epoch ms"
    return None


def ts_of(record: GeneratedRecord) -> int:
    """Event time (epoch ms) of a valid generated record."""
    ts = json.loads(record.value)["ts"]
    assert isinstance(ts, int)
    return ts


MIXED = GeneratorSpec(
    count=20_000,
    seed=7,
    keys=50,
    users=30,
    disorder_ms=5_000,
    late_fraction=0.03,
    bad_fraction=0.02,
)


def test_same_seed_gives_the_same_records_and_another_seed_does_not() -> None:
    first = list(generate(MIXED))
    again = list(generate(MIXED))
    other = list(generate(GeneratorSpec(**{**MIXED.__dict__, "seed": 8})))
    assert first == again
    assert [r.value for r in first] != [r.value for r in other]


def test_kind_totals_are_exact_and_match_the_fractions() -> None:
    kinds = collections.Counter(record.kind for record in generate(MIXED))
    assert set(kinds) == {"good", "late", "bad"}
    assert sum(kinds.values()) == MIXED.count
    assert kinds["late"] == round(MIXED.count * MIXED.late_fraction) == 600
    assert kinds["bad"] == round(MIXED.count * MIXED.bad_fraction) == 400
    assert (kinds["good"], kinds["late"], kinds["bad"]) == MIXED.kind_counts()


def test_no_fractions_means_only_good_records() -> None:
    records = list(generate(GeneratorSpec(count=500, seed=1)))
    assert len(records) == 500
    assert {record.kind for record in records} == {"good"}


def test_late_and_bad_positions_are_spread_over_the_stream() -> None:
    kinds = [record.kind for record in generate(MIXED)]
    half = len(kinds) // 2
    for kind in ("late", "bad"):
        first_half = kinds[:half].count(kind)
        second_half = kinds[half:].count(kind)
        assert first_half > 0
        assert second_half > 0


def test_bad_records_break_a_schema_rule_and_the_others_keep_them_all() -> None:
    reasons: collections.Counter[str] = collections.Counter()
    for record in generate(MIXED):
        reason = schema_violation(record.value)
        if record.kind == "bad":
            assert reason is not None, record.value
            reasons[reason.split()[0] if reason.startswith("missing") else reason] += 1
        else:
            assert reason is None, (reason, record.value)
    assert set(reasons) == {
        "not json",
        "not an object",
        "missing",
        "amount negative",
        "quantity below 1",
        "amount not numeric",
        "ts unparseable",
    }


def test_missing_field_variants_rotate_through_every_field() -> None:
    spec = GeneratorSpec(count=2_000, seed=3, bad_fraction=0.5)
    missing = {
        reason
        for record in generate(spec)
        if record.kind == "bad"
        and (reason := schema_violation(record.value) or "").startswith("missing")
    }
    assert missing == {f"missing {field}" for field in ORDER_FIELDS}


def test_keys_are_the_product_id() -> None:
    for record in generate(MIXED):
        if record.kind != "bad":
            assert record.key == json.loads(record.value)["product_id"].encode()
        else:
            assert record.key.startswith(b"p")


def test_some_good_amounts_are_numeric_strings() -> None:
    amounts = [json.loads(r.value)["amount"] for r in generate(MIXED) if r.kind == "good"]
    as_strings = sum(isinstance(amount, str) for amount in amounts)
    assert 0.05 * len(amounts) < as_strings < 0.15 * len(amounts)


def test_without_disorder_event_times_advance_evenly_over_the_span() -> None:
    spec = GeneratorSpec(count=1_000, seed=2, start_ms=1_000_000, span_ms=100_000)
    times = [ts_of(record) for record in generate(spec)]
    assert times == [1_000_000 + 100 * index for index in range(1_000)]


def test_disorder_jitters_times_back_by_at_most_disorder_ms() -> None:
    spec = GeneratorSpec(count=1_000, seed=2, start_ms=1_000_000, span_ms=100_000, disorder_ms=700)
    times = [ts_of(record) for record in generate(spec)]
    offsets = [1_000_000 + 100 * index - ts for index, ts in enumerate(times)]
    assert min(offsets) >= 0
    assert max(offsets) <= 700
    assert len(set(offsets)) > 100
    assert any(later < earlier for earlier, later in itertools.pairwise(times))


def test_late_records_are_far_behind_the_running_max_and_good_ones_are_not() -> None:
    running_max: int | None = None
    late_seen = 0
    for record in generate(MIXED):
        if record.kind == "bad":
            continue
        ts = ts_of(record)
        if record.kind == "late":
            late_seen += 1
            assert running_max is not None, "a late record needs an earlier event"
            assert ts <= running_max - MIXED.disorder_ms - LATE_BEHIND_MS
            # Its 60 s window has closed (end + grace passed) by the time it arrives.
            window_end = ts - ts % WINDOW_MS + WINDOW_MS
            assert window_end + GRACE_MS <= running_max
        else:
            if running_max is not None:
                step = MIXED.span_ms // MIXED.count + 1
                assert ts >= running_max - MIXED.disorder_ms - step
            running_max = ts if running_max is None else max(running_max, ts)
    assert late_seen == 600


def test_late_records_need_a_good_record_before_them() -> None:
    spec = GeneratorSpec(count=10, seed=0, late_fraction=0.6, bad_fraction=0.4)
    kinds = [record.kind for record in generate(spec)]
    assert kinds[0] == "good"
    assert len(kinds) == 10
    assert spec.kind_counts() == (1, 5, 4)


@pytest.mark.parametrize(
    "changes",
    [
        {"late_fraction": 0.7, "bad_fraction": 0.4},
        {"bad_fraction": -0.1},
        {"late_fraction": 1.5},
        {"count": -1},
        {"keys": 0},
        {"disorder_ms": -1},
        {"start_ms": -1},  # every order would be timestamp_out_of_range
        {"start_ms": 4_102_444_800_000 - 100, "span_ms": 100},
    ],
)
def test_impossible_specs_are_rejected(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        GeneratorSpec(**{"count": 10, **changes})  # type: ignore[arg-type]


def test_jsonl_lines_pass_through_with_the_product_id_as_key(tmp_path: Path) -> None:
    path = tmp_path / "orders.jsonl"
    good = b'{"order_id":"a","product_id":"p7","amount":"1.50"}'
    path.write_bytes(
        good + b"\n"
        b"\n"
        b"   \n"
        b'{"order_id":"b","amount":1}\r\n'
        b"[1,2,3]\n"
        b"not json at all\n"
        b'{"product_id":12}'
    )
    assert list(read_file(path)) == [
        (b"p7", good),
        (None, b'{"order_id":"b","amount":1}'),
        (None, b"[1,2,3]"),
        (None, b"not json at all"),
        (b"12", b'{"product_id":12}'),
    ]


def test_a_line_whose_product_id_is_no_key_goes_through_unkeyed(tmp_path: Path) -> None:
    """A lone surrogate, or nesting deeper than the parser goes, stopped the whole load as
    "cannot read FILE"; the pipeline dead-letters such a line (`not_utf8`, `not_json`)."""
    path = tmp_path / "orders.jsonl"
    surrogate = b'{"order_id":"a","product_id":"\\ud800"}'
    deep = b'{"product_id":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path.write_bytes(surrogate + b"\n" + deep + b"\n" + b'{"product_id":"p1"}\n')
    assert list(read_file(path)) == [
        (None, surrogate),
        (None, deep),
        (b"p1", b'{"product_id":"p1"}'),
    ]


@pytest.mark.parametrize("suffix", [".json", ".ndjson", ".JSONL"])
def test_every_jsonl_suffix_is_read_as_jsonl(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"orders{suffix}"
    path.write_bytes(b'{"product_id":"p1"}\n')
    assert list(read_file(path)) == [(b"p1", b'{"product_id":"p1"}')]


def test_generated_records_round_trip_through_a_jsonl_file(tmp_path: Path) -> None:
    records = list(generate(GeneratorSpec(count=300, seed=5)))
    path = tmp_path / "generated.jsonl"
    path.write_bytes(b"".join(record.value + b"\n" for record in records))
    assert list(read_file(path)) == [(record.key, record.value) for record in records]


def test_csv_rows_become_json_orders_keyed_by_product(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text(
        "order_id,user_id,product_id,category,amount,quantity,ts\n"
        "o1,u1,p1,books,12.50,2,1700000000000\n"
        "o2,u2,p2,toys,3,1,2024-01-01T00:00:00+00:00\n"
        "\n"
        "o3,u3,,garden,,1,1700000000001\n",
        encoding="utf-8",
    )
    rows = list(read_file(path))
    assert [key for key, _ in rows] == [b"p1", b"p2", None]
    first, second, third = (json.loads(value) for _, value in rows)
    assert first == {
        "order_id": "o1",
        "user_id": "u1",
        "product_id": "p1",
        "category": "books",
        "amount": "12.50",
        "quantity": 2,
        "ts": 1_700_000_000_000,
    }
    assert schema_violation(rows[0][1]) is None
    assert second["ts"] == "2024-01-01T00:00:00+00:00"
    assert schema_violation(rows[1][1]) is None
    assert schema_violation(rows[2][1]) == "missing product_id"
    assert "amount" not in third


def test_csv_without_the_schema_columns_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "orders.csv"
    path.write_text("order_id,amount\no1,2\n", encoding="utf-8")
    with pytest.raises(ValueError, match="product_id"):
        list(read_file(path))


def test_unknown_suffix_fails_at_call_time_with_one_clear_line(tmp_path: Path) -> None:
    path = tmp_path / "orders.parquet"
    with pytest.raises(ValueError, match=r"unknown suffix '\.parquet'") as raised:
        read_file(path)
    message = str(raised.value)
    assert "\n" not in message
    assert ".jsonl" in message
    assert ".csv" in message
